"""Keras' own training loop for the model of keras_model.py: compile and fit one epoch,
shared by tensorflow_keras.py (tf.keras) and keras_backends.py (Keras 3 on any
backend). The caller passes its own `keras` module."""
import threading

from contract.models import ADAM

from .keras_model import sequential


def compiled_sequential(keras, m, seed, learning_rate, jit_compile):
    """Compiled with Keras' loss and metric; under mixed_float16 Keras 3's compile wraps the
    optimizer in a LossScaleOptimizer itself (auto_scale_loss)."""
    model = sequential(keras, m, seed)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate, **ADAM),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], jit_compile=jit_compile)
    return model


def step_counter(keras, windows):
    """A fit callback that counts each training step into the harness' steady-state windows
    (harness.StepWindows) without a host sync of its own."""
    lock = threading.Lock()  # Keras 3 may run two steps' callbacks at once in its thread pool

    class StepCounter(keras.callbacks.Callback):  # type: ignore[name-defined]  # the caller's keras
        # Keras 3 on JAX/torch: dispatched off the main thread once the step's logs are on the
        # host (on TensorFlow Keras 3 converts every step's logs on the main thread anyway)
        async_safe = True

        def on_train_batch_end(self, batch, logs=None):
            with lock:
                windows.step_done(sync=False)
    counter = StepCounter()
    counter._supports_tf_logs = True  # Keras 2 (its __init__ sets False): logs stay tensors, no sync
    return counter


def fit_epoch(keras, model, x, y, batch_size, windows):
    """One epoch in the order given (no shuffling), its steps counted into the windows;
    Keras' loss is the per-sample mean."""
    logs = model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0,
                     callbacks=[step_counter(keras, windows)]).history
    return logs["loss"][-1], logs["accuracy"][-1]
