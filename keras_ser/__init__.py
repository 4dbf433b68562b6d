"""keras-ser: speech emotion recognition with learned data generation (Keras 3, TensorFlow).

Data flows one way: corpus on disk -> TFRecords (`tfrecords_tools`) -> `keras_ser.data`
(crop, augment, features in the graph) -> models and trainers -> `keras_ser.metrics` /
`keras_ser.folds` -> results and exported models.

Importing the package first keeps TensorFlow's start-up log lines off the console
(`keras_ser.quiet`; ``KERAS_SER_TF_LOGS=1`` shows them).
"""

from keras_ser import quiet as _quiet

_quiet.install()

__version__ = "0.1.0"
