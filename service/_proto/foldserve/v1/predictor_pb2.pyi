from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PredictRequest(_message.Message):
    __slots__ = ("features", "request_id", "model_name", "model_version")
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    features: _containers.RepeatedScalarFieldContainer[float]
    request_id: str
    model_name: str
    model_version: str
    def __init__(self, features: _Optional[_Iterable[float]] = ..., request_id: _Optional[str] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("label", "class_name", "probabilities", "model_name", "model_version", "request_id")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAME_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    label: int
    class_name: str
    probabilities: _containers.RepeatedScalarFieldContainer[float]
    model_name: str
    model_version: str
    request_id: str
    def __init__(self, label: _Optional[int] = ..., class_name: _Optional[str] = ..., probabilities: _Optional[_Iterable[float]] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "status", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    status: str
    message: str
    def __init__(self, code: _Optional[int] = ..., status: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class PredictStreamResponse(_message.Message):
    __slots__ = ("request_id", "prediction", "error")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    prediction: PredictResponse
    error: Error
    def __init__(self, request_id: _Optional[str] = ..., prediction: _Optional[_Union[PredictResponse, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ...) -> None: ...

class DescribeModelRequest(_message.Message):
    __slots__ = ("model_name", "model_version")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ...) -> None: ...

class DescribeModelResponse(_message.Message):
    __slots__ = ("name", "version", "input_name", "input_shape", "input_dtype", "class_labels", "output_names", "training_metrics", "fold_report", "dataset", "arch", "created", "foldserve_version", "sha256", "opset", "shift", "adaptation", "candidate")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    INPUT_NAME_FIELD_NUMBER: _ClassVar[int]
    INPUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    INPUT_DTYPE_FIELD_NUMBER: _ClassVar[int]
    CLASS_LABELS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_NAMES_FIELD_NUMBER: _ClassVar[int]
    TRAINING_METRICS_FIELD_NUMBER: _ClassVar[int]
    FOLD_REPORT_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    ARCH_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    FOLDSERVE_VERSION_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    OPSET_FIELD_NUMBER: _ClassVar[int]
    SHIFT_FIELD_NUMBER: _ClassVar[int]
    ADAPTATION_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    input_name: str
    input_shape: _containers.RepeatedScalarFieldContainer[int]
    input_dtype: str
    class_labels: _containers.RepeatedScalarFieldContainer[str]
    output_names: _containers.RepeatedScalarFieldContainer[str]
    training_metrics: _struct_pb2.Struct
    fold_report: _struct_pb2.Struct
    dataset: str
    arch: str
    created: str
    foldserve_version: str
    sha256: str
    opset: int
    shift: ShiftMonitor
    adaptation: Adaptation
    candidate: Candidate
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., input_name: _Optional[str] = ..., input_shape: _Optional[_Iterable[int]] = ..., input_dtype: _Optional[str] = ..., class_labels: _Optional[_Iterable[str]] = ..., output_names: _Optional[_Iterable[str]] = ..., training_metrics: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., fold_report: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., dataset: _Optional[str] = ..., arch: _Optional[str] = ..., created: _Optional[str] = ..., foldserve_version: _Optional[str] = ..., sha256: _Optional[str] = ..., opset: _Optional[int] = ..., shift: _Optional[_Union[ShiftMonitor, _Mapping]] = ..., adaptation: _Optional[_Union[Adaptation, _Mapping]] = ..., candidate: _Optional[_Union[Candidate, _Mapping]] = ...) -> None: ...

class Adaptation(_message.Message):
    __slots__ = ("source_sha256", "source_version", "examples", "data", "created", "layers", "agreement", "entropy_source", "entropy_adapted")
    SOURCE_SHA256_FIELD_NUMBER: _ClassVar[int]
    SOURCE_VERSION_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    ENTROPY_SOURCE_FIELD_NUMBER: _ClassVar[int]
    ENTROPY_ADAPTED_FIELD_NUMBER: _ClassVar[int]
    source_sha256: str
    source_version: str
    examples: int
    data: str
    created: str
    layers: _containers.RepeatedScalarFieldContainer[str]
    agreement: float
    entropy_source: float
    entropy_adapted: float
    def __init__(self, source_sha256: _Optional[str] = ..., source_version: _Optional[str] = ..., examples: _Optional[int] = ..., data: _Optional[str] = ..., created: _Optional[str] = ..., layers: _Optional[_Iterable[str]] = ..., agreement: _Optional[float] = ..., entropy_source: _Optional[float] = ..., entropy_adapted: _Optional[float] = ...) -> None: ...

class Candidate(_message.Message):
    __slots__ = ("version", "adaptation")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ADAPTATION_FIELD_NUMBER: _ClassVar[int]
    version: str
    adaptation: Adaptation
    def __init__(self, version: _Optional[str] = ..., adaptation: _Optional[_Union[Adaptation, _Mapping]] = ...) -> None: ...

class ShiftMonitor(_message.Message):
    __slots__ = ("enabled", "reason", "half_life", "margin", "prior_margin", "replay", "replay_data", "examples", "alarm", "first_alarm_example", "first_alarm", "layers", "prior", "arl", "test_arl", "first_alarm_tests", "first_alarm_change", "tests", "reference_data", "reference_origin", "shared")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    HALF_LIFE_FIELD_NUMBER: _ClassVar[int]
    MARGIN_FIELD_NUMBER: _ClassVar[int]
    PRIOR_MARGIN_FIELD_NUMBER: _ClassVar[int]
    REPLAY_FIELD_NUMBER: _ClassVar[int]
    REPLAY_DATA_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    ALARM_FIELD_NUMBER: _ClassVar[int]
    FIRST_ALARM_EXAMPLE_FIELD_NUMBER: _ClassVar[int]
    FIRST_ALARM_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    PRIOR_FIELD_NUMBER: _ClassVar[int]
    ARL_FIELD_NUMBER: _ClassVar[int]
    TEST_ARL_FIELD_NUMBER: _ClassVar[int]
    FIRST_ALARM_TESTS_FIELD_NUMBER: _ClassVar[int]
    FIRST_ALARM_CHANGE_FIELD_NUMBER: _ClassVar[int]
    TESTS_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_DATA_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_ORIGIN_FIELD_NUMBER: _ClassVar[int]
    SHARED_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    reason: str
    half_life: float
    margin: float
    prior_margin: float
    replay: int
    replay_data: str
    examples: int
    alarm: bool
    first_alarm_example: int
    first_alarm: _containers.RepeatedScalarFieldContainer[str]
    layers: _containers.RepeatedCompositeFieldContainer[ShiftLayer]
    prior: ShiftPrior
    arl: float
    test_arl: float
    first_alarm_tests: _containers.RepeatedScalarFieldContainer[str]
    first_alarm_change: int
    tests: _containers.RepeatedCompositeFieldContainer[ShiftTest]
    reference_data: str
    reference_origin: str
    shared: bool
    def __init__(self, enabled: _Optional[bool] = ..., reason: _Optional[str] = ..., half_life: _Optional[float] = ..., margin: _Optional[float] = ..., prior_margin: _Optional[float] = ..., replay: _Optional[int] = ..., replay_data: _Optional[str] = ..., examples: _Optional[int] = ..., alarm: _Optional[bool] = ..., first_alarm_example: _Optional[int] = ..., first_alarm: _Optional[_Iterable[str]] = ..., layers: _Optional[_Iterable[_Union[ShiftLayer, _Mapping]]] = ..., prior: _Optional[_Union[ShiftPrior, _Mapping]] = ..., arl: _Optional[float] = ..., test_arl: _Optional[float] = ..., first_alarm_tests: _Optional[_Iterable[str]] = ..., first_alarm_change: _Optional[int] = ..., tests: _Optional[_Iterable[_Union[ShiftTest, _Mapping]]] = ..., reference_data: _Optional[str] = ..., reference_origin: _Optional[str] = ..., shared: _Optional[bool] = ...) -> None: ...

class ShiftTest(_message.Message):
    __slots__ = ("name", "statistic", "threshold", "alarm", "alarm_example", "change_example", "peak")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATISTIC_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    ALARM_FIELD_NUMBER: _ClassVar[int]
    ALARM_EXAMPLE_FIELD_NUMBER: _ClassVar[int]
    CHANGE_EXAMPLE_FIELD_NUMBER: _ClassVar[int]
    PEAK_FIELD_NUMBER: _ClassVar[int]
    name: str
    statistic: float
    threshold: float
    alarm: bool
    alarm_example: int
    change_example: int
    peak: float
    def __init__(self, name: _Optional[str] = ..., statistic: _Optional[float] = ..., threshold: _Optional[float] = ..., alarm: _Optional[bool] = ..., alarm_example: _Optional[int] = ..., change_example: _Optional[int] = ..., peak: _Optional[float] = ...) -> None: ...

class ShiftLayer(_message.Message):
    __slots__ = ("layer", "score", "threshold", "clean_max", "peak", "side", "reference_mean", "reference_var", "excluded_units", "summaries")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    CLEAN_MAX_FIELD_NUMBER: _ClassVar[int]
    PEAK_FIELD_NUMBER: _ClassVar[int]
    SIDE_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_MEAN_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_VAR_FIELD_NUMBER: _ClassVar[int]
    EXCLUDED_UNITS_FIELD_NUMBER: _ClassVar[int]
    SUMMARIES_FIELD_NUMBER: _ClassVar[int]
    layer: str
    score: float
    threshold: float
    clean_max: float
    peak: float
    side: str
    reference_mean: _containers.RepeatedScalarFieldContainer[float]
    reference_var: _containers.RepeatedScalarFieldContainer[float]
    excluded_units: _containers.RepeatedScalarFieldContainer[int]
    summaries: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, layer: _Optional[str] = ..., score: _Optional[float] = ..., threshold: _Optional[float] = ..., clean_max: _Optional[float] = ..., peak: _Optional[float] = ..., side: _Optional[str] = ..., reference_mean: _Optional[_Iterable[float]] = ..., reference_var: _Optional[_Iterable[float]] = ..., excluded_units: _Optional[_Iterable[int]] = ..., summaries: _Optional[_Iterable[str]] = ...) -> None: ...

class ShiftPrior(_message.Message):
    __slots__ = ("score", "threshold", "clean_max", "peak", "class_priors")
    SCORE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    CLEAN_MAX_FIELD_NUMBER: _ClassVar[int]
    PEAK_FIELD_NUMBER: _ClassVar[int]
    CLASS_PRIORS_FIELD_NUMBER: _ClassVar[int]
    score: float
    threshold: float
    clean_max: float
    peak: float
    class_priors: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, score: _Optional[float] = ..., threshold: _Optional[float] = ..., clean_max: _Optional[float] = ..., peak: _Optional[float] = ..., class_priors: _Optional[_Iterable[float]] = ...) -> None: ...
