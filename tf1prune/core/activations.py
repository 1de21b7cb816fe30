"""Channel statistics of an analysed graph: expected values from BatchNorm parameters (no data), or
measured on calibration batches.

- :func:`gaussian_moments`: a BatchNorm's output channel is about ``N(offset, scale**2)`` when its
  moving statistics describe its input; activations map that through their Gaussian moments, ops
  that move channels keep them, residual adds sum them (:mod:`tf1prune.core.rules.moments`);
- :func:`measured_means` and :func:`measured_moments`: per-channel means (and mean squares) of
  tensors over calibration batches;
- :class:`LayerRows`: a conv or dense layer's input rows (its input windows at sampled output
  positions), the data of least-squares reconstruction and of the ``reconstruction`` criterion;
- :func:`row_covariances`: the covariance of those rows over calibration batches.

They drive bias compensation (:mod:`tf1prune.apply.compensate`) and the activation criteria
(:mod:`tf1prune.choose.criteria`).

Example::

    moments = gaussian_moments(analysis, values)     # {tensor: (mean, std)} per channel position
"""
import numpy as np

from tf1prune.core import rules
from tf1prune.core.names import node_of, tensor_name
from tf1prune.core.rules.layers import patch_geometry
from tf1prune.core.rules.moments import moments


def gaussian_moments(analysis, values):
    """``{tensor: (mean, std)}`` (arrays over the tensor's channel positions) for the tensors whose
    channels come from a BatchNorm through activations and channel movers only."""
    view, info = analysis.view, analysis.info
    known = {}
    for site in analysis.batch_norms:
        if site.output and site.offset and tensor_name(site.output) in info:
            offset, scale = _bn_moments(site, values)
            if len(offset) == len(info[tensor_name(site.output)].elems):
                known[tensor_name(site.output)] = (offset, scale)
    sites = {site.node: site for site in analysis.batch_norms}
    for name in view.order:
        node = view.nodes[name]
        how = moments(node.op)
        if how is None:
            known.update(_call_moments(analysis, name, sites, values))
            continue
        carriers = [t for t in view.data_inputs(name) if tensor_name(t) in info]
        if not carriers or any(tensor_name(t) not in known for t in carriers):
            continue
        kind, fn = how
        if kind == "map" and len(carriers) == 1:
            out = tensor_name(name)
            if out in info:
                known[out] = fn(node, *known[tensor_name(carriers[0])])
        elif kind == "sum":
            out = tensor_name(name)
            if out in info and all(len(known[tensor_name(t)][0]) == len(info[out].elems) for t in carriers) \
                    and len(carriers) == len(view.data_inputs(name)):
                means = [known[tensor_name(t)][0] for t in carriers]
                variances = [known[tensor_name(t)][1] ** 2 for t in carriers]
                known[out] = (np.sum(means, 0), np.sqrt(np.sum(variances, 0)))
        elif kind == "move":
            by_elem = {}
            for t in carriers:
                mean, std = known[tensor_name(t)]
                by_elem.update(zip(info[tensor_name(t)].elems.tolist(), zip(mean, std)))
            for i in range(view.num_outputs(name)):
                out = "%s:%d" % (name, i)
                if out in info and all(e in by_elem for e in info[out].elems.tolist()):
                    pairs = [by_elem[e] for e in info[out].elems.tolist()]
                    known[out] = (np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs]))
    return known


def _bn_moments(site, values):
    offset = np.asarray(values(site.offset), np.float64).reshape(-1)
    scale = np.abs(np.asarray(values(site.scale), np.float64).reshape(-1)) if site.scale else np.ones_like(offset)
    return offset, scale


def _call_moments(analysis, name, sites, values):
    """Moments of the outputs of a call op (a Keras ``If`` BatchNorm) whose every branch returns a
    BatchNorm's output (through identities), all with the same scale and offset."""
    view = analysis.view
    spec = rules.call_spec(view.nodes[name].op)
    if spec is None or spec.loop:
        return {}
    out = {}
    for i in range(view.num_outputs(name)):
        tensor = "%s:%d" % (name, i)
        if tensor not in analysis.info:
            continue
        found = []
        for attr in spec.branches:
            body = view.function_body(name, attr)
            inner = node_of(body.outputs[i])
            while rules.is_read(body.view.nodes[inner].op) and body.view.data_inputs(inner):
                inner = node_of(body.view.data_inputs(inner)[0])
            prefix = "%s/%s/" % (name, attr) if len(spec.branches) > 1 else name + "/"
            found.append(sites.get(prefix + inner))
        if all(site is not None and site.offset for site in found) and \
                len({(site.offset, site.scale) for site in found}) == 1:
            offset, scale = _bn_moments(found[0], values)
            if len(offset) == len(analysis.info[tensor].elems):
                out[tensor] = (offset, scale)
    return out


def measured_moments(analysis, graph_def, batches, tensors):
    """``{tensor: (mean, mean square)}`` over the batches of each channel position of ``tensors``."""
    import tensorflow.compat.v1 as tf
    from tf1prune.core.graph import feed_batches
    from tf1prune.tfcompat import session_config
    tensors = sorted({tensor_name(t) for t in tensors if t and tensor_name(t) in analysis.info})
    if not tensors:
        return {}
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(graph_def, name="")
    sums, squares, count = {t: 0.0 for t in tensors}, {t: 0.0 for t in tensors}, {t: 0 for t in tensors}
    with tf.Session(graph=graph, config=session_config()) as sess:
        for feed in feed_batches(batches):
            for t, value in zip(tensors, sess.run(tensors, feed)):
                axis = analysis.info[t].axis
                moved = np.moveaxis(np.asarray(value, np.float64), axis, -1).reshape(-1, value.shape[axis])
                sums[t] = sums[t] + moved.sum(0)
                squares[t] = squares[t] + (moved * moved).sum(0)
                count[t] += moved.shape[0]
    return {t: (sums[t] / max(count[t], 1), squares[t] / max(count[t], 1)) for t in tensors}


def measured_means(analysis, graph_def, batches, tensors):
    """``{tensor: mean over the batches of each channel position}`` of ``tensors`` of ``graph_def``."""
    return {t: m for t, (m, _) in measured_moments(analysis, graph_def, batches, tensors).items()}


def input_tensor(analysis, layer):
    """The layer's data input: the first input whose channels the kernel's in axis reads."""
    for t in analysis.view.data_inputs(layer.node):
        if tensor_name(t) in analysis.info and node_of(t) != layer.kernel:
            return tensor_name(t)
    return None


class LayerRows:
    """The rows a conv (``Conv2D`` or depthwise, SAME or VALID) or dense layer multiplies by its kernel,
    built in ``graph`` (the analysed graph imported with no prefix): ``rows`` is a
    ``[samples, kh·kw·channels]`` tensor (the kernel's (kh, kw, channel) order) of the input windows
    at ``positions`` random output positions per image (dense: every input row); pass
    :meth:`feed` ``(rng, batch size)`` in the feed dict.  Only the sampled windows are gathered."""

    def __init__(self, analysis, layer, graph, positions):
        import tensorflow.compat.v1 as tf
        x = graph.get_tensor_by_name(input_tensor(analysis, layer))
        kernel = analysis.view.shape(layer.kernel + ":0")
        if layer.kind == "dense":
            self.rows, self.grid, self.positions = tf.reshape(x, [-1, kernel[layer.in_axis]]), None, 1
            return
        (kh, kw), strides, rates, padding, channels_first = patch_geometry(
            analysis.view, analysis.view.nodes[layer.node], layer.kind == "depthwise")
        in_shape = analysis.view.shape(input_tensor(analysis, layer))
        out_shape = analysis.view.shape(layer.node + ":0")
        hw = (2, 3) if channels_first else (1, 2)
        size, self.grid = [in_shape[a] for a in hw], tuple(out_shape[a] for a in hw)
        self.positions = min(self.grid[0] * self.grid[1], positions)
        pads = []
        for n, out, k, stride, rate in zip(size, self.grid, (kh, kw), strides, rates):
            total = max((out - 1) * stride + (k - 1) * rate + 1 - n, 0) if padding == "SAME" else 0
            pads.append([total // 2, total - total // 2])
        if channels_first:
            x = tf.transpose(x, [0, 2, 3, 1])
        padded = tf.pad(x, [[0, 0]] + pads + [[0, 0]]) if any(max(p) for p in pads) else x
        self._taps = np.array([(i * rates[0], j * rates[1]) for i in range(kh) for j in range(kw)], np.int64)
        self._strides = strides
        self.index = tf.placeholder(tf.int32, [None, 3])
        self.rows = tf.reshape(tf.gather_nd(padded, self.index), [-1, len(self._taps) * int(x.shape[-1])])

    def feed(self, rng, batch):
        """``{index placeholder: windows}`` for a batch of ``batch`` images (dense: nothing)."""
        if self.grid is None:
            return {}
        b = np.repeat(np.arange(batch), self.positions)
        flat = np.concatenate([rng.choice(self.grid[0] * self.grid[1], self.positions, replace=False)
                               for _ in range(batch)])
        rows, cols = (flat // self.grid[1]) * self._strides[0], (flat % self.grid[1]) * self._strides[1]
        index = np.stack([np.repeat(b, len(self._taps)),
                          (rows[:, None] + self._taps[:, 0]).reshape(-1),
                          (cols[:, None] + self._taps[:, 1]).reshape(-1)], 1)
        return {self.index: index.astype(np.int32)}


def row_covariances(analysis, graph_def, batches, layers, positions=32, samples=16384, budget=1e8, seed=0):
    """``{layer node: (covariance, samples)}`` of each layer's :class:`LayerRows` over the batches
    (``positions`` per image, fewer when there are many images: about ``samples`` rows per layer);
    the layers are gathered a few at a time so that at most ``budget`` sums are held at once."""
    import tensorflow.compat.v1 as tf
    from tf1prune.core.graph import feed_batches
    from tf1prune.tfcompat import session_config
    batches = feed_batches(batches)
    images = sum(len(next(iter(b.values()))) for b in batches)
    positions = max(1, min(positions, -(-samples // max(images, 1))))
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(graph_def, name="")
    waves, size = [[]], 0
    for layer in layers:
        shape = analysis.view.shape(layer.kernel + ":0")
        width = shape[layer.in_axis] if layer.kind == "dense" else int(np.prod(shape[:-1]))
        if waves[-1] and size + width * width > budget:
            waves.append([])
            size = 0
        waves[-1].append((layer, width))
        size += width * width
    out, rng = {}, np.random.RandomState(seed)
    with tf.Session(graph=graph, config=session_config()) as sess:
        for wave in waves:
            with graph.as_default():
                samplers = [LayerRows(analysis, layer, graph, positions) for layer, _ in wave]
            sums = [[np.zeros(w), np.zeros((w, w)), 0] for _, w in wave]
            for feed in batches:
                batch, extra = len(next(iter(feed.values()))), {}
                for sampler in samplers:
                    extra.update(sampler.feed(rng, batch))
                for acc, rows in zip(sums, sess.run([s.rows for s in samplers], {**feed, **extra})):
                    rows = np.asarray(rows, np.float32)
                    acc[0] += rows.sum(0, dtype=np.float64)
                    acc[1] += rows.T @ rows
                    acc[2] += len(rows)
            for (layer, _), (total, products, n) in zip(wave, sums):
                mean = total / max(n, 1)
                out[layer.node] = (products / max(n, 1) - np.outer(mean, mean), n)
    return out
