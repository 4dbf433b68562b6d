"""The experimental protocol of each paper for one fold: data, training, scoring.

A protocol module wires the stack for one method: the training batches (`keras_ser.data`),
the model and its trainer (`keras_ser.models`, `keras_ser.training`), resumable training
(`keras_ser.training.resumable.fit_resumable`) and utterance scoring with the exported
model's front end (`keras_ser.scoring`). Recipes (``recipes/*.py``) and the KerasTuner
search (`keras_ser.tuning`) call these functions; `keras_ser.experiment` runs them over
folds.

- `keras_ser.protocols.multitask_dcgan`: Chang & Scherer (ICASSP 2017).
- `keras_ser.protocols.sngan`: Eskimez et al. (Interspeech 2020).
- `keras_ser.protocols.crnn`: Etienne et al. (2018).
"""
