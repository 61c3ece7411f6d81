"""Tests of flowlib.compress: bit-exact round trips, determinism across thread counts, clear errors, the CLI."""

from __future__ import annotations

import doctest
import io
import math

import numpy as np
import pytest
import torch

import flowlib.compress as compress_module
from flowlib.coding import (
    ChecksumError,
    ContainerError,
    CorruptStreamError,
    ModelMismatchError,
    NotAFlowlibFileError,
    TruncatedFileError,
    pack,
    unpack,
)
from flowlib.compress import (
    classical_codec_sizes,
    compress,
    decompress,
    image_encoders,
    main,
    model_fingerprint,
    num_lanes_for,
)
from flowlib.models.idf import IDF
from flowlib.train import save_checkpoint


def tiny_model(seed: int = 0, image_shape=(1, 8, 8), noise: float = 0.05) -> IDF:
    """An untrained tiny IDF with randomised weights (so couplings shift values and priors differ per element)."""
    torch.manual_seed(seed)
    model = IDF(image_shape, num_levels=2, num_couplings=2, hidden_channels=8, num_components=3)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(noise * torch.randn_like(parameter))
    return model.eval()


def random_images(count: int, shape=(1, 8, 8), seed: int = 0) -> torch.Tensor:
    """Smooth-ish random images (a blurred random field plus noise), so latents are not all uniform noise."""
    generator = torch.Generator().manual_seed(seed)
    base = torch.rand(count, *shape, generator=generator) * 255
    blurred = torch.nn.functional.avg_pool2d(base, 3, 1, 1, count_include_pad=False)
    return (blurred + 8 * torch.randn(blurred.shape, generator=generator)).clamp(0, 255).to(torch.uint8)


@pytest.fixture(scope="module")
def model() -> IDF:
    return tiny_model()


def test_doctests() -> None:
    assert doctest.testmod(compress_module).failed == 0


def test_round_trip_is_bit_exact_and_greyscale_input_works(model: IDF) -> None:
    images = random_images(12)
    data = compress(images, model)
    assert torch.equal(decompress(data, model), images)
    assert compress(images[:, 0].numpy(), model) == data  # (N, H, W) numpy greyscale gives the same file
    assert torch.equal(decompress(compress(images[:1], model), model), images[:1])  # a single image


def test_round_trip_of_extreme_images_that_need_escapes(model: IDF) -> None:
    images = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    images[1] = 255
    images[2, :, ::2] = 255
    images[3] = torch.randint(0, 256, (1, 8, 8), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    narrow = tiny_model(3)
    with torch.no_grad():  # very confident priors: most values fall outside their tables' windows and are escaped
        for level in narrow.levels:
            if level.last:
                level.prior.log_scales.fill_(-6.0)
            else:
                level.prior.initial_log_scale = -6.0
    assert torch.equal(decompress(compress(images, narrow), narrow), images)


def test_mnist_slice_round_trip_and_size_close_to_the_ideal_code_length() -> None:
    from flowlib.data import load_images

    try:
        images, _ = load_images("mnist", "test", subset=32)
    except Exception as error:  # pragma: no cover - depends on the machine's data
        pytest.skip(f"MNIST not available: {error}")
    model = tiny_model(image_shape=(1, 28, 28), noise=0.01)
    data = compress(images, model)
    assert torch.equal(decompress(data, model), images)
    ideal_bits = -model.log_prob(images, exact=True).sum().item() / math.log(2)
    payload = len(unpack(data, expected_fingerprint=None).payload)
    overhead = payload - ideal_bits / 8
    # precision-24 tables cost ~1e-5 bits per value; the lanes' final states 4-8 bytes each; the CRC 4 bytes
    assert -1 <= overhead <= 0.001 * ideal_bits / 8 + 8 * num_lanes_for(32) + 4 + 8
    assert len(data) - payload == 64  # the container header; no extra metadata


def test_decoding_does_not_depend_on_the_thread_count(model: IDF) -> None:
    images = random_images(10, seed=5)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        data_one = compress(images, model)
        torch.set_num_threads(2)
        data_two = compress(images, model)
        decoded = decompress(data_one, model)
    finally:
        torch.set_num_threads(threads)
    assert data_one == data_two
    assert torch.equal(decoded, images)


def test_many_chunks_share_one_stream(model: IDF, monkeypatch: pytest.MonkeyPatch) -> None:
    images = random_images(11, seed=2)
    single = compress(images, model)
    monkeypatch.setattr(compress_module, "CHUNK_IMAGES", 3)  # network calls on 3 images at a time
    chunked = compress(images, model)
    assert torch.equal(decompress(chunked, model), images)
    assert abs(len(chunked) - len(single)) <= 4  # no per-chunk start states


def test_truncated_corrupted_foreign_and_garbage_files_raise(model: IDF) -> None:
    images = random_images(6, seed=3)
    data = compress(images, model)
    with pytest.raises(TruncatedFileError):
        decompress(data[:-10], model)
    with pytest.raises(TruncatedFileError):
        decompress(data[:30], model)
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x10
    with pytest.raises(ChecksumError):
        decompress(bytes(flipped), model)
    with pytest.raises(ModelMismatchError):
        decompress(data, tiny_model(seed=1))
    with pytest.raises(NotAFlowlibFileError):
        decompress(b"\x89PNG\r\n\x1a\n" + bytes(100), model)
    with pytest.raises(ContainerError):
        decompress(bytes(0), model)


def test_a_corrupt_stream_behind_a_valid_container_is_detected(model: IDF) -> None:
    """Even if the container checks pass (here: re-packed after corruption), wrong pixels are never returned."""
    images = random_images(6, seed=4)
    container = unpack(compress(images, model), expected_fingerprint=None)
    for position in (0, len(container.payload) // 3, len(container.payload) - 1):
        payload = bytearray(container.payload)
        payload[position] ^= 0x01
        forged = pack(bytes(payload), shape=container.shape, count=container.count,
                      model_fingerprint=container.model_fingerprint)
        with pytest.raises(CorruptStreamError):
            decompress(forged, model)


def test_bad_inputs_are_rejected_with_clear_messages(model: IDF) -> None:
    with pytest.raises(TypeError, match="uint8"):
        compress(torch.zeros(2, 1, 8, 8), model)
    with pytest.raises(ValueError, match=r"\(N, 1, 8, 8\)"):
        compress(torch.zeros(2, 1, 9, 9, dtype=torch.uint8), model)


def test_fingerprint_changes_with_any_weight(model: IDF) -> None:
    other = tiny_model()
    assert model_fingerprint(model) == model_fingerprint(other) and len(model_fingerprint(model)) == 16
    with torch.no_grad():
        next(other.parameters()).view(-1)[0] += 1e-6
    assert model_fingerprint(model) != model_fingerprint(other)


def test_command_line_round_trip_over_npy_and_png_folders(model: IDF, tmp_path, capsys) -> None:
    from PIL import Image

    save_checkpoint(model, "07_idf-tiny-test", metadata={"config": model.config}, directory=tmp_path / "checkpoints")
    common = ["--model", "07_idf-tiny-test", "--checkpoint-dir", str(tmp_path / "checkpoints")]
    images = random_images(5, seed=6)
    np.save(tmp_path / "batch.npy", images[:3, 0].numpy())  # (N, H, W)
    folder = tmp_path / "pngs"
    folder.mkdir()
    for index in (3, 4):
        Image.fromarray(images[index, 0].numpy()).save(folder / f"digit_{index}.png")
    main(["encode", str(tmp_path / "batch.npy"), str(folder), "--output", str(tmp_path / "x.flz"), *common])
    assert "5 images" in capsys.readouterr().out
    main(["decode", str(tmp_path / "x.flz"), "--output", str(tmp_path / "out.npy"), *common])
    assert np.array_equal(np.load(tmp_path / "out.npy"), images.numpy())
    main(["decode", str(tmp_path / "x.flz"), "--output", str(tmp_path / "decoded"), *common])
    decoded = sorted((tmp_path / "decoded").glob("*.png"))
    assert len(decoded) == 5 and np.array_equal(np.asarray(Image.open(decoded[4])), images[4, 0].numpy())
    with pytest.raises(SystemExit) as exit_info:
        main(["encode", str(tmp_path / "x.flz"), "--output", str(tmp_path / "y.flz"), *common])
    assert exit_info.value.code == 1 and "PNG files, folders of PNGs or .npy" in capsys.readouterr().err
    (tmp_path / "x.flz").write_bytes((tmp_path / "x.flz").read_bytes()[:-5])
    with pytest.raises(SystemExit):
        main(["decode", str(tmp_path / "x.flz"), "--output", str(tmp_path / "z.npy"), *common])
    assert "TruncatedFileError" in capsys.readouterr().err and not (tmp_path / "z.npy").exists()


def test_classical_codecs_are_lossless_and_sizes_add_up() -> None:
    import imagecodecs
    from PIL import Image

    images = random_images(3, shape=(1, 16, 16), seed=7)
    decoders = {
        "png": lambda data: np.asarray(Image.open(io.BytesIO(data))),
        "webp": lambda data: np.asarray(Image.open(io.BytesIO(data)).convert("L")),
        "jpeg_xl": imagecodecs.jpegxl_decode,
        "jpeg_2000": imagecodecs.jpeg2k_decode,
    }
    encoders = image_encoders()
    for name, encode in encoders.items():
        for image in images[:, 0].numpy():
            assert np.array_equal(decoders[name](encode(image)).squeeze(), image), name
    sizes = classical_codec_sizes(images)
    assert sizes["png"] == sum(len(encoders["png"](image)) for image in images[:, 0].numpy())
    assert all(value is None or value > 0 for value in sizes.values())
    with pytest.raises(ValueError, match="uint8"):
        classical_codec_sizes(images.float())


def test_file_size_is_the_tables_information_content_plus_lane_states(model: IDF) -> None:
    from flowlib.compress import table_code_length

    images = random_images(20, seed=8)
    data = compress(images, model)
    content_bytes = table_code_length(images, model) / 8
    payload = len(data) - 64
    assert content_bytes - 1 <= payload <= content_bytes + 8 * num_lanes_for(20) + 8


def test_flowlib_compress_is_callable_although_the_module_is_imported(model: IDF) -> None:
    import flowlib

    images = random_images(2)
    assert flowlib.compress is compress_module  # `python -m flowlib.compress` needs the module ...
    data = flowlib.compress(images, model)  # ... and calling it compresses
    assert data == compress_module.compress(images, model)
    assert torch.equal(flowlib.decompress(data, model), images)


def test_conditional_mixture_prior_round_trip_is_bit_exact() -> None:
    """Factor-out priors that are mixtures (Eq. 5b): per-value mixture tables over wide windows, coded exactly."""
    torch.manual_seed(1)
    model = IDF((1, 8, 8), num_levels=2, num_couplings=2, hidden_channels=8, num_components=3, factor_components=3)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    model.eval()
    images = random_images(9, seed=4)
    images[0] = 0
    images[1, :, ::2] = 255  # bimodal columns
    data = compress(images, model)
    assert torch.equal(decompress(data, model), images)
    ideal_bits = -model.log_prob(images, exact=True).sum().item() / math.log(2)
    content = compress_module.table_code_length(images, model)
    assert abs(content - 32 - ideal_bits) <= 0.002 * ideal_bits + 1  # the model's code length, plus the 32-bit CRC
    decoded = decompress(compress(images, model), model)  # deterministic: the same file twice
    assert torch.equal(decoded, images) and compress(images, model) == data


def test_table_batches_bound_memory_and_still_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(2)
    model = IDF((1, 8, 8), num_levels=2, num_couplings=1, hidden_channels=8, num_components=2, factor_components=2)
    model.eval()
    images = random_images(5, seed=6)
    monkeypatch.setattr(compress_module, "TABLE_ENTRIES", 64)  # many tiny batches per bucket
    assert torch.equal(decompress(compress(images, model), model), images)
