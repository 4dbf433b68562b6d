"""Corpus readers and a sharded TFRecord writer for emotional and unlabelled speech.

``python -m tfrecords_tools CORPUS SRC_DIR OUT_DIR`` converts a corpus as released into
TFRecord shards in the one schema of `tfrecords_tools.schema`, with ``stats.json`` and
``skipped.tsv`` beside them. Audio is decoded with soundfile and resampled with soxr;
TensorFlow is needed only to write the records; its start-up log lines are kept off the
console as in keras-ser (`keras_ser.quiet`; ``KERAS_SER_TF_LOGS=1`` shows them).
"""

from keras_ser import quiet as _quiet
from tfrecords_tools.schema import (
    SAMPLE_RATE,
    Skipped,
    Utterance,
    feature_spec,
    read_example,
)

_quiet.install()  # tfrecords_tools imports TensorFlow lazily, inside functions

__all__ = ["SAMPLE_RATE", "Skipped", "Utterance", "feature_spec", "read_example"]
