"""The MNIST CNN as a compiled Keras Sequential plus Keras' own fit/evaluate, shared by
every Keras file (tf.keras in tensorflow_keras.py, Keras 3 on any backend in
keras_backends.py): the caller passes its own `keras` module. Keras' default init is the
benchmark's (Glorot-uniform kernels, zero biases)."""
from .models import ADAM


def compiled_sequential(keras, m, learning_rate, jit_compile="auto"):
    (c1, k1), (c2, k2) = m.conv_layers
    layers = keras.layers
    model = keras.Sequential([
        keras.Input(shape=m.input_shape),
        layers.Conv2D(c1, k1, activation="relu"), layers.MaxPooling2D(m.pool),
        layers.Conv2D(c2, k2, activation="relu"), layers.MaxPooling2D(m.pool),
        layers.Flatten(), layers.Dense(m.dense_units, activation="relu"),
        layers.Dropout(m.dropout), layers.Dense(m.classes)])
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
