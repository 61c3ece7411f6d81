"""Tests of flowlib.data for your own data (as_batches, batch_inputs) and of the dataset loaders' edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from flowlib.data import TensorBatches, as_batches, batch_inputs


def _flatten(batches) -> list[int]:
    return [int(value) for batch in batches for value in batch_inputs(batch).flatten()]


def test_tensor_batches_cover_every_example_once_per_pass():
    x = torch.arange(10)
    batches = as_batches(x, batch_size=4)
    assert isinstance(batches, TensorBatches) and len(batches) == 3
    assert _flatten(batches) == list(range(10))
    assert _flatten(batches) == list(range(10))  # a second epoch sees the data again
    shuffled = as_batches(x, batch_size=4, shuffle=True, seed=1)
    first, second = _flatten(shuffled), _flatten(shuffled)
    assert sorted(first) == sorted(second) == list(range(10)) and first != second
    assert _flatten(as_batches(x, batch_size=4, shuffle=True, seed=1)) == first  # reproducible from the seed
    dropped = as_batches(x, batch_size=4, drop_last=True)
    assert len(dropped) == 2 and [len(batch) for batch in dropped] == [4, 4]


def test_pairs_numpy_datasets_and_loaders():
    x, labels = torch.randn(7, 3), torch.arange(7)
    for batch in as_batches((x, labels), batch_size=3, shuffle=True):
        inputs, batch_labels = batch
        assert torch.equal(inputs, x[batch_labels])
    assert isinstance(next(iter(as_batches(np.zeros((5, 2), dtype=np.float32), 2))), torch.Tensor)
    from_dataset = as_batches(TensorDataset(x, labels), batch_size=4)
    assert [len(batch_inputs(batch)) for batch in from_dataset] == [4, 3]
    loader = DataLoader(TensorDataset(x), batch_size=2)
    assert as_batches(loader, batch_size=100) is loader

    class Stream(IterableDataset):
        def __iter__(self):
            return iter(torch.arange(5.0))

    assert _flatten(as_batches(Stream(), batch_size=2, shuffle=True)) == list(range(5))


def test_bad_data_is_refused_with_a_reason():
    with pytest.raises(ValueError, match="batch_size"):
        as_batches(torch.zeros(3), batch_size=0)
    with pytest.raises(ValueError, match="no examples"):
        as_batches(torch.zeros(0, 2))
    with pytest.raises(ValueError, match="different lengths"):
        as_batches((torch.zeros(3), torch.zeros(4)))
    with pytest.raises(ValueError, match="empty Dataset"):
        as_batches(TensorDataset(torch.zeros(0)))
    with pytest.raises(TypeError, match="one-pass iterator"):
        as_batches(iter([torch.zeros(2)]))
    with pytest.raises(TypeError, match="takes a tensor"):
        as_batches("mnist")
    with pytest.raises(TypeError, match="dict"):
        batch_inputs({"x": torch.zeros(1)})


# --- dataset loaders ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("subset", [-5, 0, 2.5, True])
def test_load_images_refuses_a_subset_that_is_not_a_positive_count(subset):
    from flowlib.data import load_images

    with pytest.raises(ValueError, match="subset must be a positive number"):
        load_images("mnist", "test", subset=subset)


def test_damaged_dataset_file_is_reported_as_damaged_not_missing(monkeypatch, tmp_path):
    from flowlib import data

    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes(b"")
    header = np.array([2051, 10000, 28, 28], dtype=">i4").tobytes()
    (raw / "t10k-images-idx3-ubyte").write_bytes(header + bytes(1000))  # truncated: 1,000 of 7,840,000 pixels
    labels = np.array([2049, 10000], dtype=">i4").tobytes() + bytes(10000)
    (raw / "t10k-labels-idx1-ubyte").write_bytes(labels)
    monkeypatch.setenv("FLOWLIB_DATA_DIR", str(tmp_path))
    with pytest.raises(data.DataCorruptError, match="t10k-images-idx3-ubyte.*truncated or damaged: delete it"):
        data.load_images("mnist", "test")
    (raw / "t10k-images-idx3-ubyte").unlink()
    monkeypatch.setattr("urllib.request.urlopen", _refuse)  # stay offline even where a network exists
    with pytest.raises(data.DataNotFoundError, match="could not find or download"):
        data.load_images("mnist", "test")


def _refuse(*args, **kwargs):
    raise OSError("network disabled in tests")


def test_dataset_bits_per_dim_takes_a_tensor_a_dataset_or_a_loader():
    from flowlib.metrics import dataset_bits_per_dim
    from flowlib.models import realnvp_vector

    flow = realnvp_vector(2, num_couplings=2, hidden_features=4)
    x = torch.rand(10, 2)
    from_tensor = dataset_bits_per_dim(flow, x)
    assert from_tensor == pytest.approx(dataset_bits_per_dim(flow, TensorDataset(x, torch.zeros(10))))
    assert from_tensor == pytest.approx(dataset_bits_per_dim(flow, DataLoader(TensorDataset(x), batch_size=3)))
