"""Masks that keep pruned weights at exactly zero while the user's optimizer trains.

Each masked variable gets a 0/1 mask variable (created once per graph, in no
standard collection, so savers and initializers ignore it).  :func:`install` (run by
every runner) wraps ``apply_gradients`` of ``tf.compat.v1.train.Optimizer`` and of tf_keras'
``OptimizerV2``: gradients are masked, and after the update the variables are
multiplied by their masks, so optimizer slots (Adam moments), weight decay and
any other update cannot bring a pruned weight back.

Runs that write masked variables without them (train ops built before the masks,
initializers, restores) are followed by a re-masking (:meth:`MaskSet.attach`) or, for
``MonitoredTrainingSession``/Estimator, by :class:`MaskHook`; custom loops can
run :attr:`MaskSet.apply_op` themselves.

Example::

    masks = MaskSet.for_graph(sess.graph, variables)
    masks.load(sess, {'conv1/kernel': mask_array})   # zeroes the variable too
    train_op = tf.train.AdamOptimizer().minimize(loss)   # keeps the zeros
"""
import functools
import gc
import weakref

import numpy as np
import tensorflow.compat.v1 as tf

from tf1prune import tfcompat
from tf1prune.core import rules

COLLECTION = "tf1prune_masks"
_MASK_SETS = weakref.WeakKeyDictionary()     # graph -> MaskSet
_MASKED_OPS = weakref.WeakKeyDictionary()    # graph -> names of ops that re-apply the masks


class MaskSet:
    """0/1 masks for some variables of one graph, and the op that applies them."""

    def __init__(self, graph, variables):
        self.graph = graph
        self.variables = dict(variables)   # name (no ':0') -> tf.Variable
        with graph.as_default(), tf.name_scope("tf1prune_masks"):
            self.masks = {name: tf.Variable(tf.ones(v.shape, v.dtype.base_dtype), trainable=False,
                                            collections=[COLLECTION], name=name.replace("/", "_"))
                          for name, v in self.variables.items()}
            self.apply_op = self._apply(list(self.variables))
        self._loader = tfcompat.VariableLoader(graph)
        self._loader.prepare(self.masks.values())
        self._values = {}

    @property
    def masked_ops(self):
        """Names of this graph's ops that re-apply the masks (masked train ops, apply ops)."""
        return _masked_ops(self.graph)

    @staticmethod
    def current(graph):
        """The graph's mask set, or None."""
        return _MASK_SETS.get(graph)

    @classmethod
    def for_graph(cls, graph, variables):
        """The graph's mask set, created on first use; a call naming more variables makes a set of
        all of them, which keeps the values of the earlier masks (load them into sessions)."""
        current = _MASK_SETS.get(graph)
        if current is None or set(variables) - set(current.variables):
            merged = dict(current.variables) if current is not None else {}
            merged.update(variables)
            new = cls(graph, merged)
            if current is not None:
                new._values = dict(current._values)
            _MASK_SETS[graph] = current = new
        return current

    def _apply(self, names, after=()):
        with self.graph.as_default(), tf.control_dependencies(list(after)):
            updates = [tf.assign(self.variables[n], self.variables[n] * self.masks[n]) if tfcompat.is_ref(self.variables[n])
                       else self.variables[n].assign(self.variables[n] * self.masks[n]) for n in names]
            group = tf.group(*updates, name="tf1prune_apply_masks")
        _masked_ops(self.graph).add(group.name)
        return group

    def load(self, sess, values):
        """Set the masks (variables not named keep their last values, or all ones) and zero the
        masked weights now."""
        for name, mask in self.masks.items():
            default = self._values.get(name, np.ones(mask.shape.as_list()))
            self._values[name] = np.asarray(values.get(name, default), mask.dtype.as_numpy_dtype)
        self._loader.load(sess, {self.masks[name]: value for name, value in self._values.items()})
        sess.run(self.apply_op)

    def values(self):
        return dict(self._values)

    def remember(self, values):
        """Record mask values that an op (not :meth:`load`) assigned."""
        self._values.update({n: np.asarray(v) for n, v in values.items()})

    def apply_after(self, ops):
        """An op that re-applies every mask after ``ops``."""
        return self._apply(list(self.variables), after=ops)

    def name_of(self, var):
        """Name of a masked variable, or None."""
        name = var.op.name
        return name if name in self.variables else None

    def attach(self, sess):
        """Make ``sess.run`` re-apply the masks after a run that writes a masked variable without
        them (a train op built before the masks, an initializer, a restore), and make tf_keras
        models of the graph rebuild their train step (with masks) at their next fit."""
        _reset_keras_train_functions(self.graph)
        if getattr(sess, "_tf1prune_masked", False):
            return
        run, memo = sess.run, {}

        @functools.wraps(run)
        def masked_run(fetches, *args, **kwargs):
            result = run(fetches, *args, **kwargs)
            if any(self._writes_unmasked(f, memo) for f in _flatten(fetches)):
                run(self.apply_op)
            return result
        sess.run = masked_run
        sess._tf1prune_masked = True

    def _writes_unmasked(self, fetch, memo):
        """Does running ``fetch`` write a masked variable, other than through a masked train op?"""
        try:
            op = self.graph.as_graph_element(fetch)
        except (TypeError, ValueError, KeyError):
            return False
        op = getattr(op, "op", op)
        key = (op.name, self.graph.version)
        if key not in memo:
            targets = {v.op.name for v in self.variables.values()}
            seen, stack, hit = set(), [op], False
            while stack and not hit:
                cur = stack.pop()
                if cur.name in seen or cur.name in self.masked_ops:
                    continue
                seen.add(cur.name)
                written = rules.written_variable([t.name for t in cur.inputs]) if _is_write(cur) else None
                hit = written is not None and written.split(":")[0] in targets
                stack.extend(t.op for t in cur.inputs)
                stack.extend(cur.control_inputs)
            memo[key] = hit
        return memo[key]


class MaskHook(tf.train.SessionRunHook):
    """Loads the masks into the session it creates and re-applies them after every step
    (MonitoredTrainingSession, Estimator)."""

    def __init__(self, mask_set):
        self._mask_set = mask_set

    def after_create_session(self, session, coord):
        self._mask_set.load(session, self._mask_set.values())

    def after_run(self, run_context, run_values):
        run_context.session.run(self._mask_set.apply_op)


def _reset_keras_train_functions(graph):
    """Drop the cached ``train_function`` of tf_keras (graph-mode) models built in ``graph``."""
    try:
        from tf_keras.src.engine import training_v1
    except ImportError:
        return
    for obj in gc.get_objects():
        if isinstance(obj, training_v1.Model) and getattr(obj, "train_function", None) is not None:
            inputs = getattr(obj, "inputs", None) or []
            if inputs and inputs[0].graph is graph:
                obj.train_function = None


def _flatten(fetches):
    """The leaves of a ``sess.run`` fetch structure (dict keys of any type, e.g. MonitoredSession's hooks)."""
    if isinstance(fetches, dict):
        return [leaf for value in fetches.values() for leaf in _flatten(value)]
    if isinstance(fetches, (list, tuple)):
        return [leaf for value in fetches for leaf in _flatten(value)]
    return [fetches]


def _is_write(op):
    return rules.is_write(op.type)


def _masked_ops(graph):
    """The per-graph set of op names that re-apply the masks."""
    return _MASKED_OPS.setdefault(graph, set())




def _wrap(apply_gradients):
    @functools.wraps(apply_gradients)
    def wrapper(self, grads_and_vars, *args, **kwargs):
        grads_and_vars = list(grads_and_vars)
        if tf.executing_eagerly() or not grads_and_vars:
            return apply_gradients(self, grads_and_vars, *args, **kwargs)
        graph = grads_and_vars[0][1].graph
        mask_set = _MASK_SETS.get(graph)
        names = [mask_set.name_of(v) if mask_set else None for _, v in grads_and_vars]
        if mask_set is not None:
            grads_and_vars = [(g * mask_set.masks[n] if n and isinstance(g, tf.Tensor) else g, v)
                              for (g, v), n in zip(grads_and_vars, names)]
        train_op = apply_gradients(self, grads_and_vars, *args, **kwargs)
        masked = [n for n in names if n]
        if mask_set is None or not masked:
            return train_op
        with graph.as_default():
            apply = mask_set._apply(masked, after=[train_op])
            if not isinstance(train_op, tf.Operation):
                with tf.control_dependencies([apply]):
                    apply = tf.identity(train_op)
        _masked_ops(graph).add(apply.name)
        return apply
    wrapper._tf1prune = True
    return wrapper


def install():
    """Wrap ``apply_gradients`` of the TF1 and tf_keras optimizer base classes (idempotent)."""
    classes = [tf.train.Optimizer]
    try:
        from tf_keras.src.optimizers.legacy import optimizer_v2
        classes.append(optimizer_v2.OptimizerV2)
    except ImportError:  # tf_keras not installed
        pass
    for cls in classes:
        if not getattr(cls.apply_gradients, "_tf1prune", False):
            cls.apply_gradients = _wrap(cls.apply_gradients)
