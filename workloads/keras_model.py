"""The models as a Keras Sequential (and compiled, with Keras' own fit/evaluate), shared by
every file that builds them with Keras layers: tf.keras in the TensorFlow files (Keras 2 in
the legacy image), Keras 3 on any backend in keras_backends.py. The caller passes its own
`keras` module. Keras' default initialisers (the ones models.py names), each seeded."""
from contract.models import ADAM, EMBEDDING_INIT_RANGE, RecurrentSpec


def sequential(keras, m, seed):
    """The model as a Keras Sequential. Every initialiser has its own seed, so the initial
    weights depend on the seed alone (not on graph or op order: the Estimator builds a new
    graph for every call)."""
    seeds = iter(range(seed, seed + 100))
    glorot = lambda: keras.initializers.GlorotUniform(seed=next(seeds))  # noqa: E731
    layers = keras.layers
    if isinstance(m, RecurrentSpec):  # Keras' LSTM: one bias per gate, forget gate's at 1
        body = [layers.Embedding(m.vocab_size, m.embedding_dim, embeddings_initializer=keras.initializers.RandomUniform(
                    -EMBEDDING_INIT_RANGE, EMBEDDING_INIT_RANGE, seed=next(seeds))),
                layers.LSTM(m.hidden_units, kernel_initializer=glorot(),
                            recurrent_initializer=keras.initializers.Orthogonal(seed=next(seeds)))]
        return keras.Sequential([keras.Input(shape=m.input_shape, dtype=m.input_dtype), *body,
                                 layers.Dense(m.classes, kernel_initializer=glorot())])
    body = []
    for block in m.blocks:
        body += [layers.Conv2D(filters, kernel, padding=block.padding, activation="relu",
                               kernel_initializer=glorot()) for filters, kernel in block.convs]
        body.append(layers.MaxPooling2D(block.pool))
        if block.dropout:
            body.append(layers.Dropout(block.dropout))
    return keras.Sequential([
        keras.Input(shape=m.input_shape), *body, layers.Flatten(),
        layers.Dense(m.dense_units, activation="relu", kernel_initializer=glorot()),
        layers.Dropout(m.dropout),
        layers.Dense(m.classes, kernel_initializer=glorot())])


def lstm_options(m, gpu):
    """What runs the LSTM (recorded in metrics.json); empty for the CNNs."""
    if not isinstance(m, RecurrentSpec):
        return {}
    return {"lstm_kernel": "keras.layers.LSTM: cuDNN-fused on GPU (default activations, "
                           "no mask)" if gpu else "keras.layers.LSTM: generic kernel (CPU)"}


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
