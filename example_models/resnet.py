"""Small ResNet: stem + 3 stages of basic residual blocks (projection and identity shortcuts)."""
import tf_keras as keras
from tf_keras import layers


def _conv_bn(x, filters, kernel, strides, name, relu=True):
    x = layers.Conv2D(filters, kernel, strides=strides, padding='same', use_bias=False,
                      name=name + '_conv')(x)
    x = layers.BatchNormalization(name=name + '_bn')(x)
    return layers.ReLU(name=name + '_relu')(x) if relu else x


def _basic_block(x, filters, strides, name):
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = _conv_bn(x, filters, 1, strides, name + '_proj', relu=False)
    y = _conv_bn(x, filters, 3, strides, name + '_a')
    y = _conv_bn(y, filters, 3, 1, name + '_b', relu=False)
    y = layers.Add(name=name + '_add')([shortcut, y])
    return layers.ReLU(name=name + '_out')(y)


def build_model(input_shape=(28, 28, 1), num_classes=10, widths=(16, 32, 64),
                blocks_per_stage=(2, 1, 1)):
    """Stage i has `blocks_per_stage[i]` blocks of width `widths[i]`; stages after the
    first start with stride 2. The first block of stage 0 uses an identity shortcut
    when the stem width equals widths[0] (the default)."""
    inp = keras.Input(shape=input_shape)
    x = _conv_bn(inp, widths[0], 3, 1, 'stem')
    for s, (width, nblocks) in enumerate(zip(widths, blocks_per_stage)):
        for b in range(nblocks):
            strides = 2 if (s > 0 and b == 0) else 1
            x = _basic_block(x, width, strides, 'stage%d_block%d' % (s + 1, b + 1))
    x = layers.GlobalAveragePooling2D(name='avg_pool')(x)
    out = layers.Dense(num_classes, name='logits')(x)
    return keras.Model(inp, out, name='resnet')
