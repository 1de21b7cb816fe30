"""MobileNetV2-style net with inverted residuals, squeeze-excitation and mixed activations."""
import tensorflow.compat.v1 as tf
import tf_keras as keras
from tf_keras import layers

# (expansion, out_channels, stride, squeeze-excitation gate or None, activation)
DEFAULT_BLOCKS = (
    (1, 8, 1, None, 'relu6'),             # expansion 1: no expand conv
    (4, 16, 2, 'hard_sigmoid', 'relu6'),
    (4, 16, 1, 'sigmoid', 'relu6'),       # residual
    (4, 24, 2, None, 'swish'),
    (4, 24, 1, 'hard_sigmoid', 'hard_swish'),  # residual
    (6, 24, 1, 'sigmoid', 'relu6'),       # residual
)


def _hard_swish(x):
    return x * tf.nn.relu6(x + 3.0) / 6.0


def _act(x, kind, name):
    if kind == 'relu6':
        return layers.ReLU(6.0, name=name)(x)
    if kind == 'swish':
        return layers.Activation('swish', name=name)(x)
    if kind == 'hard_swish':
        return layers.Lambda(_hard_swish, name=name)(x)
    raise ValueError(kind)


def _squeeze_excite(x, gate, name, ratio=4):
    channels = x.shape[-1]
    s = layers.GlobalAveragePooling2D(name=name + '_pool')(x)
    s = layers.Reshape((1, 1, channels), name=name + '_reshape')(s)
    s = layers.Conv2D(max(channels // ratio, 4), 1, activation='relu', name=name + '_reduce')(s)
    s = layers.Conv2D(channels, 1, name=name + '_expand')(s)
    s = layers.Activation(gate, name=name + '_gate')(s)
    return layers.Multiply(name=name + '_mul')([x, s])


def _inverted_residual(x, expansion, out_ch, stride, se, act, name):
    in_ch = x.shape[-1]
    y = x
    if expansion != 1:
        y = layers.Conv2D(in_ch * expansion, 1, use_bias=False, name=name + '_expand')(y)
        y = layers.BatchNormalization(name=name + '_expand_bn')(y)
        y = _act(y, act, name + '_expand_act')
    y = layers.DepthwiseConv2D(3, strides=stride, padding='same', use_bias=False,
                               name=name + '_dw')(y)
    y = layers.BatchNormalization(name=name + '_dw_bn')(y)
    y = _act(y, act, name + '_dw_act')
    if se:
        y = _squeeze_excite(y, se, name + '_se')
    y = layers.Conv2D(out_ch, 1, use_bias=False, name=name + '_project')(y)
    y = layers.BatchNormalization(name=name + '_project_bn')(y)
    if stride == 1 and in_ch == out_ch:
        y = layers.Add(name=name + '_add')([x, y])
    return y


def build_model(input_shape=(28, 28, 1), num_classes=10, stem_width=8,
                blocks=DEFAULT_BLOCKS, last_width=64):
    """`blocks` is a sequence of (expansion, out_channels, stride, se_gate, activation)."""
    inp = keras.Input(shape=input_shape)
    x = layers.Conv2D(stem_width, 3, strides=2, padding='same', use_bias=False, name='stem_conv')(inp)
    x = layers.BatchNormalization(name='stem_bn')(x)
    x = layers.ReLU(6.0, name='stem_relu')(x)
    for i, spec in enumerate(blocks):
        x = _inverted_residual(x, *spec, name='block%d' % (i + 1))
    x = layers.Conv2D(last_width, 1, use_bias=False, name='head_conv')(x)
    x = layers.BatchNormalization(name='head_bn')(x)
    x = layers.ReLU(6.0, name='head_relu')(x)
    x = layers.GlobalAveragePooling2D(name='avg_pool')(x)
    out = layers.Dense(num_classes, name='logits')(x)
    return keras.Model(inp, out, name='mobilenet_v2_se')
