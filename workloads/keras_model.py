"""The MNIST CNN as a Keras Sequential (and compiled, with Keras' own fit/evaluate),
shared by every file that builds it with Keras layers: tf.keras in the TensorFlow files
(Keras 2 in the legacy image), Keras 3 on any backend in keras_backends.py. The caller
passes its own `keras` module. Glorot-uniform kernels and zero biases (Keras' defaults)."""
from .models import ADAM


def sequential(keras, m, seed):
    """The CNN as a Keras Sequential. Each Glorot-uniform initialiser has its own seed, so
    the initial weights depend on the seed alone (not on graph or op order: the Estimator
    builds a new graph for every call)."""
    layers = keras.layers
    glorot = [keras.initializers.GlorotUniform(seed=seed + i) for i in range(4)]
    (c1, k1), (c2, k2) = m.conv_layers
    return keras.Sequential([
        keras.Input(shape=m.input_shape),
        layers.Conv2D(c1, k1, activation="relu", kernel_initializer=glorot[0]),
        layers.MaxPooling2D(m.pool),
        layers.Conv2D(c2, k2, activation="relu", kernel_initializer=glorot[1]),
        layers.MaxPooling2D(m.pool),
        layers.Flatten(),
        layers.Dense(m.dense_units, activation="relu", kernel_initializer=glorot[2]),
        layers.Dropout(m.dropout),
        layers.Dense(m.classes, kernel_initializer=glorot[3])])


def compiled_sequential(keras, m, seed, learning_rate, jit_compile="auto"):
    model = sequential(keras, m, seed)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate, **ADAM),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], jit_compile=jit_compile)
    return model


def fit_epoch(model, x, y, batch_size):
    """One epoch in the order given (no shuffling); Keras' loss is the per-sample mean."""
    logs = model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0).history
    return logs["loss"][-1], logs["accuracy"][-1]


def evaluate(model, x, y, batch_size):
    loss, accuracy = model.evaluate(x, y, batch_size=batch_size, verbose=0)
    return loss, accuracy
