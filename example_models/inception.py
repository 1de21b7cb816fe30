"""Small Inception-style net: stem + 2 four-branch inception modules."""
import tf_keras as keras
from tf_keras import layers


def _conv_bn(x, filters, kernel, name, strides=1):
    x = layers.Conv2D(filters, kernel, strides=strides, padding='same', use_bias=False,
                      name=name + '_conv')(x)
    x = layers.BatchNormalization(name=name + '_bn')(x)
    return layers.ReLU(name=name + '_relu')(x)


def _inception_module(x, w, name):
    """Branches: 1x1 | 1x1->3x3 | 1x1->3x3->3x3 | maxpool3x3->1x1; w=(b1, b2r, b2, b3r, b3, b4)."""
    b1 = _conv_bn(x, w[0], 1, name + '_b1')
    b2 = _conv_bn(_conv_bn(x, w[1], 1, name + '_b2_reduce'), w[2], 3, name + '_b2')
    b3 = _conv_bn(x, w[3], 1, name + '_b3_reduce')
    b3 = _conv_bn(_conv_bn(b3, w[4], 3, name + '_b3a'), w[4], 3, name + '_b3b')
    b4 = layers.MaxPooling2D(3, strides=1, padding='same', name=name + '_b4_pool')(x)
    b4 = _conv_bn(b4, w[5], 1, name + '_b4')
    return layers.Concatenate(axis=-1, name=name + '_concat')([b1, b2, b3, b4])


def build_model(input_shape=(28, 28, 1), num_classes=10, stem_width=16,
                module_widths=((8, 8, 16, 4, 8, 8), (16, 12, 24, 4, 8, 8))):
    inp = keras.Input(shape=input_shape)
    x = _conv_bn(inp, stem_width, 3, 'stem', strides=2)
    for i, w in enumerate(module_widths):
        x = _inception_module(x, w, 'mixed%d' % (i + 1))
    x = layers.GlobalAveragePooling2D(name='avg_pool')(x)
    out = layers.Dense(num_classes, name='logits')(x)
    return keras.Model(inp, out, name='inception')
