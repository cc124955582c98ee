"""TensorFlow Estimator API (TF 2.15, the last release with tf.estimator): a model_fn of
Keras layers and tf.compat.v1 Adam, fed by tf.data input_fns that slice the numpy arrays.

An Estimator keeps no model in memory: every train/evaluate/predict call builds a new
graph and session and restores the latest checkpoint, so state moves between calls
through model_dir (a temporary directory on /tmp).
"""
import atexit
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf
from tensorflow import keras

from contract.models import ADAM

from .harness import batches
from .keras_model import sequential
from .tensorflow_common import TensorFlowBase

v1 = tf.compat.v1
TRAIN, EVAL = tf.estimator.ModeKeys.TRAIN, tf.estimator.ModeKeys.EVAL


class _EndOfTraining(v1.train.SessionRunHook):  # type: ignore[name-defined]  # TF's own module
    """At the end of each train() call: read the epoch's streaming loss and accuracy
    (updated in-graph with every step) and save the one checkpoint the next call restores."""

    def __init__(self, owner, metrics):
        self.owner, self.metrics = owner, metrics

    def end(self, session):
        self.owner.train_metrics = session.run(self.metrics)
        saver = v1.get_collection(v1.GraphKeys.SAVERS)[0]  # the Estimator's default Saver
        saver.save(session, os.path.join(self.owner.model_dir, "model.ckpt"),
                   global_step=session.run(v1.train.get_global_step()), write_meta_graph=False)


class _StepCounter(v1.train.SessionRunHook):  # type: ignore[name-defined]
    """Counts each training step into the steady-state windows: after_run follows the
    session.run that ran the step, so its results exist (no sync of its own)."""

    def __init__(self, windows):
        self.windows = windows

    def after_run(self, run_context, run_values):
        self.windows.step_done(sync=False)


class Implementation(TensorFlowBase):
    train_metrics: tuple  # (loss, accuracy) of the last train() call, set by _EndOfTraining
    framework, api = "tensorflow-legacy", "estimator"

    def configure(self):
        options = super().configure()
        threads = self.spec["threads"]
        session = v1.ConfigProto(intra_op_parallelism_threads=threads["intra_op"] or 0,
                                 inter_op_parallelism_threads=threads["inter_op"] or 0,
                                 allow_soft_placement=True)
        session.gpu_options.allow_growth = True
        if not self.gpu:  # sessions see every GPU unless told not to
            session.device_count["GPU"] = 0
        self.model_dir = tempfile.mkdtemp(prefix="dlbench-estimator-")
        atexit.register(shutil.rmtree, self.model_dir, True)
        # No periodic checkpoints, summaries or step logging: _EndOfTraining saves once per call.
        self.run_config = tf.estimator.RunConfig(
            model_dir=self.model_dir, tf_random_seed=self.spec["seed"], session_config=session,
            save_checkpoints_steps=None, save_checkpoints_secs=None, save_summary_steps=None,
            log_step_count_steps=None, checkpoint_save_graph_def=False, keep_checkpoint_max=1)
        return {**options, "intra_op_threads": session.intra_op_parallelism_threads,
                "inter_op_threads": session.inter_op_parallelism_threads,
                "model_dir": "tempdir", "checkpoint": "once at the end of each train() call",
                "save_summary_steps": None, "log_step_count_steps": None,
                "checkpoint_save_graph_def": False, "keep_checkpoint_max": 1}

    def precision_settings(self):  # the model lives in model_fn's graphs: the policy it takes
        return {**super().precision_settings(), "loss_scaling": self.precision == "fp16"}

    def build(self, m):
        self.m = m
        self.estimator = tf.estimator.Estimator(self._model_fn, config=self.run_config)
        return sequential(keras, m, self.spec["seed"]).count_params()  # model_fn builds the same

    def _model_fn(self, features, labels, mode):
        logits = sequential(keras, self.m, self.spec["seed"])(features, training=mode == TRAIN)
        if mode not in (TRAIN, EVAL):
            return tf.estimator.EstimatorSpec(mode, predictions=logits)
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
        loss = tf.reduce_mean(losses)
        metrics = {"xent": v1.metrics.mean(losses),  # "loss" is the Estimator's own key
                   "accuracy": v1.metrics.accuracy(labels, tf.argmax(logits, 1))}
        if mode == EVAL:
            return tf.estimator.EstimatorSpec(mode, loss=loss, eval_metric_ops=metrics)
        adam = v1.train.AdamOptimizer(self.spec["learning_rate"], ADAM["beta_1"],
                                      ADAM["beta_2"], ADAM["epsilon"])
        if self.precision == "fp16":  # the layers follow Keras' global policy; loss scaling is ours
            adam = v1.mixed_precision.MixedPrecisionLossScaleOptimizer(adam, "dynamic")
        train_op = tf.group(adam.minimize(loss, v1.train.get_global_step()),
                            *[update for _, update in metrics.values()])
        hook = _EndOfTraining(self, [metrics["xent"][0], metrics["accuracy"][0]])
        return tf.estimator.EstimatorSpec(mode, loss=loss, train_op=train_op,
                                          training_chief_hooks=[hook])

    @staticmethod
    def _input_fn(x, y, batch_size):
        # Batches sliced from numpy by a generator: from_tensor_slices would embed the whole
        # array as a graph constant, which made each train() call ~27 s slower on 60k images.
        signature = (tf.TensorSpec((None, *x.shape[1:]), tf.as_dtype(x.dtype)),
                     tf.TensorSpec((None,), tf.int64))
        return lambda: tf.data.Dataset.from_generator(
            lambda: ((x[s], y[s]) for s in batches(len(x), batch_size)), output_signature=signature)

    def train_epoch(self, x, y, batch_size):
        self.estimator.train(self._input_fn(x, y, batch_size), hooks=[_StepCounter(self.step_windows)])
        loss, accuracy = self.train_metrics
        return float(loss), float(accuracy)

    def evaluate(self, x, y, batch_size):
        result = self.estimator.evaluate(self._input_fn(x, y, batch_size))
        return float(result["xent"]), float(result["accuracy"])

    def logits(self, x):
        batches = self.estimator.predict(lambda: tf.data.Dataset.from_tensors(x),
                                         yield_single_examples=False)
        return np.concatenate(list(batches))
