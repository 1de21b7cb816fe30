"""The seed model: a small Keras Sequential convnet for MNIST-sized inputs."""
import tf_keras as keras
from tf_keras import layers


def build_model(input_shape=(28, 28, 1), num_classes=10):
    """Conv16-BN-pool-conv32-pool-flatten-dropout-dense (exactly the seed model)."""
    return keras.Sequential([
        layers.InputLayer(input_shape=input_shape),
        layers.Conv2D(16, kernel_size=(3, 3), activation="relu"),
        layers.BatchNormalization(),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Flatten(),
        layers.Dropout(0.5),
        layers.Dense(num_classes),
    ])
