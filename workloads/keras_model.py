"""The models as a Keras Sequential, shared by every file that builds them with Keras
layers: tf.keras in the TensorFlow files (Keras 2 in the legacy image), Keras 3 on any
backend in keras_backends.py (keras_fit.py compiles and fits it). The caller passes its own
`keras` module. Keras' default initialisers (the ones models.py names), each seeded."""
from contract.models import EMBEDDING_INIT_RANGE, RecurrentSpec


def mixed_policy(precision):
    """Keras' global dtype policy for a precision policy: the mixed ones compute in bfloat16 /
    float16 and keep variables in float32; fp32 and tf32: float32 throughout."""
    return {"bf16": "mixed_bfloat16", "fp16": "mixed_float16"}.get(precision, "float32")


def dtype_settings(keras, model, optimizer):
    """The dtypes in force and the loss scaling, as Keras reports them (precision_settings)."""
    return {"dtype_policy": model.dtype_policy.name, "compute_dtype": model.dtype_policy.compute_dtype,
            "variable_dtype": model.dtype_policy.variable_dtype,
            "logits_dtype": model.layers[-1].compute_dtype, "optimizer": type(optimizer).__name__,
            "loss_scaling": isinstance(optimizer, keras.mixed_precision.LossScaleOptimizer)}


def sequential(keras, m, seed):
    """The model as a Keras Sequential. Every initialiser has its own seed, so the initial
    weights depend on the seed alone (not on graph or op order: the Estimator builds a new
    graph for every call)."""
    seeds = iter(range(seed, seed + 100))
    # under a mixed policy the logits layer computes in float32, so softmax and loss are float32
    logits_dtype = "float32" if keras.mixed_precision.global_policy().name.startswith("mixed") else None
    glorot = lambda: keras.initializers.GlorotUniform(seed=next(seeds))  # noqa: E731
    layers = keras.layers
    if isinstance(m, RecurrentSpec):  # Keras' LSTM: one bias per gate, forget gate's at 1
        body = [layers.Embedding(m.vocab_size, m.embedding_dim, embeddings_initializer=keras.initializers.RandomUniform(
                    -EMBEDDING_INIT_RANGE, EMBEDDING_INIT_RANGE, seed=next(seeds))),
                layers.LSTM(m.hidden_units, kernel_initializer=glorot(),
                            recurrent_initializer=keras.initializers.Orthogonal(seed=next(seeds)))]
        return keras.Sequential([keras.Input(shape=m.input_shape, dtype=m.input_dtype), *body,
                                 layers.Dense(m.classes, kernel_initializer=glorot(), dtype=logits_dtype)])
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
        layers.Dense(m.classes, kernel_initializer=glorot(), dtype=logits_dtype)])


def lstm_options(m, gpu):
    """What runs the LSTM (recorded in metrics.json); empty for the CNNs."""
    if not isinstance(m, RecurrentSpec):
        return {}
    return {"lstm_kernel": "keras.layers.LSTM: cuDNN-fused on GPU (default activations, "
                           "no mask)" if gpu else "keras.layers.LSTM: generic kernel (CPU)"}
