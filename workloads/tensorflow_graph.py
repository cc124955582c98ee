"""TensorFlow, graph execution: tensorflow_eager.py's loop with its train and eval steps
compiled by tf.function (option jit_compile: XLA; off by default, 3x slower on CPU here)."""
import tensorflow as tf

from . import tensorflow_eager


class Implementation(tensorflow_eager.Implementation):
    api = "graph"

    def configure(self):
        self.jit_compile = bool(self.spec["options"].get("jit_compile", False))
        return {**super().configure(), "tf_function": True, "jit_compile": self.jit_compile}

    def compile(self, step):
        # batch dimension left open: one trace serves the smaller last batch too
        signature = [tf.TensorSpec((None, *self.model.input_shape[1:]), self.model.inputs[0].dtype),
                     tf.TensorSpec((None,), tf.int64)]
        return tf.function(step, input_signature=signature, jit_compile=self.jit_compile)
