"""keras-ser: speech emotion recognition with learned data generation (Keras 3, TensorFlow).

Data flows one way: corpus on disk -> TFRecords (`tfrecords_tools`) -> `keras_ser.data`
(crop, augment, features in the graph) -> models and trainers -> `keras_ser.metrics` /
`keras_ser.folds` -> results and exported models.
"""

__version__ = "0.1.0"
