"""Datasets, partitions and forget splits."""

from fed_opc.data.datasets import ArrayDataset, DataError, DatasetPair, default_data_root, load_dataset
from fed_opc.data.forget import ForgetSplit, ForgottenDataError, GuardedDataset, resolve_request, union_forget
from fed_opc.data.partition import PartitionError, dirichlet, iid, label_counts, shards

__all__ = [
    "ArrayDataset",
    "DataError",
    "DatasetPair",
    "ForgetSplit",
    "ForgottenDataError",
    "GuardedDataset",
    "PartitionError",
    "default_data_root",
    "dirichlet",
    "iid",
    "label_counts",
    "load_dataset",
    "resolve_request",
    "shards",
    "union_forget",
]
