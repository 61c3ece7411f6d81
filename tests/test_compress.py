"""Tests of flowlib.compress: bit-exact round trips, determinism across thread counts and code paths, clear errors on
hostile input, a command line that never destroys data."""

from __future__ import annotations

import doctest
import io
import math
import warnings

import numpy as np
import pytest
import torch

import flowlib.compress as compress_module
import flowlib.compress.codec as codec_module
from flowlib.coding import (
    ChecksumError,
    ContainerError,
    CorruptStreamError,
    ModelMismatchError,
    NotAFlowlibFileError,
    TruncatedFileError,
    compiled,
    pack,
    unpack,
)
from flowlib.compress import (
    RawChunkWarning,
    classical_codec_sizes,
    decompress,
    image_encoders,
    main,
    model_fingerprint,
    num_lanes_for,
)
from flowlib.compress import compress as compress_or_store_raw
from flowlib.compress import table_code_length as code_length_or_raw


def compress(images, model, allow_raw: bool = False) -> bytes:
    """The tests of the model's coding path use untrained models that would expand their images: code them anyway."""
    return compress_or_store_raw(images, model, allow_raw=allow_raw)


def table_code_length(images, model, allow_raw: bool = False) -> float:
    return code_length_or_raw(images, model, allow_raw=allow_raw)
from flowlib.models.idf import IDF, ExactArithmeticError
from flowlib.train import save_checkpoint

NUMBA_PATHS = [False, True] if compiled.available() else [False]


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
    for module in (compress_module, codec_module):
        assert doctest.testmod(module).failed == 0


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
    # precision-24 tables cost ~1e-4 bits per value; the lanes' final states 4-8 bytes each; the CRC and flag 5 bytes
    assert -1 <= overhead <= 0.001 * ideal_bits / 8 + 8 * num_lanes_for(32) + 5 + 8
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
    monkeypatch.setattr(codec_module, "CHUNK_IMAGES", 3)  # network calls on 3 images at a time
    chunked = compress(images, model)
    assert torch.equal(decompress(chunked, model), images)
    assert abs(len(chunked) - len(single)) <= 4 + 5 * 3  # no per-chunk start states; a CRC and a flag per chunk


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
    assert exit_info.value.code == 1 and "give PNG files, .npy arrays or folders" in capsys.readouterr().err
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
    content = table_code_length(images, model)
    assert abs(content - 33 - ideal_bits) <= 0.002 * ideal_bits + 1  # the code length, plus the CRC and the flag
    decoded = decompress(compress(images, model), model)  # deterministic: the same file twice
    assert torch.equal(decoded, images) and compress(images, model) == data


def test_every_window_size_round_trips_on_both_code_paths() -> None:
    """Confident and broad priors side by side: windows of many sizes, escapes, the same file with and without the
    compiled loops."""
    torch.manual_seed(2)
    model = IDF((1, 8, 8), num_levels=2, num_couplings=1, hidden_channels=8, num_components=2, factor_components=2)
    with torch.no_grad():
        model.levels[-1].prior.log_scales.uniform_(-6.0, 6.0)
        model.levels[0].prior.net.layers[-1].bias.uniform_(-3.0, 3.0)
    images = random_images(5, seed=6)
    files = set()
    for numba in NUMBA_PATHS:
        with compiled.use_numba(numba):
            data = compress(images, model)
            assert torch.equal(decompress(data, model), images)
            files.add(data)
    assert len(files) == 1


# ------------------------------------------------------------------------------------------------- code paths
@pytest.mark.skipif(not compiled.available(), reason="Numba is not installed")
def test_compiled_and_numpy_paths_write_the_same_file_and_read_each_other(model: IDF) -> None:
    images = random_images(9, seed=9)
    images[0] = 0
    files = {}
    for numba in (False, True):
        with compiled.use_numba(numba):
            files[numba] = compress(images, model)
    assert files[False] == files[True]
    for numba in (False, True):
        with compiled.use_numba(numba):
            assert torch.equal(decompress(files[not numba], model), images)


def test_the_callers_model_is_left_as_it_was(model: IDF) -> None:
    images = random_images(4, seed=10)
    model.train()
    state = {name: value.clone() for name, value in model.state_dict().items()}
    try:
        data = compress(images, model)
        assert model.training, "compress switched the model to eval mode"
        assert torch.equal(decompress(data, model), images) and model.training
    finally:
        model.eval()
    assert all(torch.equal(state[name], value) for name, value in model.state_dict().items())
    assert next(model.parameters()).device.type == "cpu"


def test_images_the_model_would_expand_are_stored_raw_with_a_warning() -> None:
    mnist = compress_module.load_model("07_idf-mnist-standard")
    noise = torch.randint(0, 256, (6, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(12))
    with pytest.warns(RawChunkWarning, match="raw"):
        data = compress(noise, mnist, allow_raw=True)
    assert torch.equal(decompress(data, mnist), noise)
    assert len(data) <= 64 + noise.numel() + 5 + 8 * num_lanes_for(6)  # raw bytes, CRC, flag, lane states
    assert table_code_length(noise, mnist, allow_raw=False) > 8 * noise.numel()  # the model would expand them
    black = torch.zeros(6, 1, 28, 28, dtype=torch.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the model codes these: no warning
        assert torch.equal(decompress(compress(black, mnist, allow_raw=True), mnist), black)


def test_channels_last_input_gets_a_hint() -> None:
    model = IDF((3, 8, 8), num_levels=2, num_couplings=1, hidden_channels=4)
    with pytest.raises(ValueError, match=r"channels-last.*permute\(0, 3, 1, 2\)"):
        compress(torch.zeros(2, 8, 8, 3, dtype=torch.uint8), model)


def test_empty_input_round_trips(model: IDF) -> None:
    empty = torch.zeros(0, 1, 8, 8, dtype=torch.uint8)
    assert decompress(compress(empty, model), model).shape == (0, 1, 8, 8)


# ------------------------------------------------------------------------------------------------- hostile input
def test_a_diverged_model_raises_a_documented_error(model: IDF) -> None:
    tampered = tiny_model()
    with torch.no_grad():
        for parameter in tampered.parameters():
            parameter.mul_(1e30)
    with pytest.raises(ExactArithmeticError, match="diverged") as error:
        compress(random_images(2), tampered)
    assert isinstance(error.value, ValueError)
    broken = tiny_model()
    with torch.no_grad():
        next(broken.parameters()).view(-1)[0] = float("nan")
    with pytest.raises(ExactArithmeticError, match="not finite"):
        compress(random_images(2), broken)


@pytest.mark.parametrize("mnist, value", [(False, 1 << 29), (True, 1 << 20), (True, -(1 << 29))])
def test_a_stream_with_huge_escaped_latents_is_a_corrupt_stream(
    model: IDF, monkeypatch: pytest.MonkeyPatch, mnist: bool, value: int
) -> None:
    """A file whose top latent holds a huge escaped value (crafted by an encoder that lies about its latents) is
    refused as corrupt, not with the network's arithmetic error."""
    if mnist:
        model = compress_module.load_model("07_idf-mnist-standard")
        images = torch.zeros(1, 1, 28, 28, dtype=torch.uint8)
    else:
        images = random_images(2, seed=13)
    honest = model.forward_integer

    def lying(x, return_contexts=False):
        latents, contexts = honest(x, return_contexts=True)
        latents[-1] = latents[-1].clone()
        latents[-1].view(-1)[0] = value
        return latents, contexts

    monkeypatch.setattr(model, "forward_integer", lying)
    data = compress(images, model)
    monkeypatch.undo()
    with pytest.raises(CorruptStreamError):
        decompress(data, model)


def test_a_header_announcing_billions_of_images_fails_at_once(model: IDF) -> None:
    import time
    import tracemalloc

    data = compress(random_images(2), model)
    forged = repack_header(data, count=2**32 - 1)
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(CorruptStreamError, match="announces"):
        decompress(forged, model)
    seconds, (_, peak) = time.perf_counter() - start, tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert seconds < 1 and peak < 16 * 2**20


def repack_header(data: bytes, **fields) -> bytes:
    """``data`` re-packed with some container fields changed (a crafted file: its checksum is valid)."""
    container = unpack(data, expected_fingerprint=None)
    arguments = dict(payload=container.payload, shape=container.shape, count=container.count,
                     model_fingerprint=container.model_fingerprint, extra=container.extra)
    arguments.update(fields)
    return pack(arguments.pop("payload"), **arguments)


# ------------------------------------------------------------------------------------------------- command line
@pytest.fixture()
def cli(model: IDF, tmp_path):
    save_checkpoint(model, "07_idf-tiny-test", metadata={"config": model.config}, directory=tmp_path / "checkpoints")
    common = ["--model", "07_idf-tiny-test", "--checkpoint-dir", str(tmp_path / "checkpoints")]

    def run(*arguments: str) -> int:
        try:
            main([*arguments, *common])
        except SystemExit as exit_info:
            return int(exit_info.code)
        return 0

    return run


def test_the_command_line_never_destroys_data(cli, tmp_path, capsys) -> None:
    images = random_images(3, seed=14)
    source = tmp_path / "v.npy"
    np.save(source, images.numpy())
    before = source.read_bytes()
    assert cli("encode", str(source), "--output", str(source)) == 1  # the output is the input
    assert source.read_bytes() == before and "one of the inputs" in capsys.readouterr().err
    target = tmp_path / "v.flz"
    target.write_bytes(b"precious")
    assert cli("encode", str(source), "--output", str(target)) == 1  # exists, no --force
    assert target.read_bytes() == b"precious" and "--force" in capsys.readouterr().err
    assert cli("encode", str(source), "--output", str(target), "--force") == 0
    assert target.read_bytes() != b"precious"
    assert cli("decode", str(target), "--output", str(target)) == 1  # decoding onto its own input
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "image_000009.png").write_bytes(b"stale")
    assert cli("decode", str(target), "--output", str(folder)) == 1  # not empty: no stale images mixed in
    assert sorted(path.name for path in folder.iterdir()) == ["image_000009.png"]
    assert cli("decode", str(target), "--output", str(tmp_path / "new")) == 0
    assert len(list((tmp_path / "new").iterdir())) == 3
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli("decode", str(target), "--output", str(empty)) == 0 and len(list(empty.iterdir())) == 3
    assert not [path for path in tmp_path.iterdir() if path.name.endswith(".tmp")]  # no temporary files left


def test_the_command_line_reads_only_what_a_header_announces(cli, tmp_path, capsys) -> None:
    assert cli("decode", "/dev/zero", "--output", str(tmp_path / "x.npy")) == 1  # endless input: refused at once
    assert "NotAFlowlibFileError" in capsys.readouterr().err
    source = tmp_path / "v.npy"
    np.save(source, random_images(2).numpy())
    assert cli("encode", str(source), "--output", str(tmp_path / "v.flz")) == 0
    (tmp_path / "w.flz").write_bytes((tmp_path / "v.flz").read_bytes() + b"more")
    assert cli("decode", str(tmp_path / "w.flz"), "--output", str(tmp_path / "w.npy")) == 1
    assert "more than" in capsys.readouterr().err and not (tmp_path / "w.npy").exists()
    assert cli("encode", "/dev/zero", "--output", str(tmp_path / "z.flz")) == 1  # not a regular file
    assert "regular file" in capsys.readouterr().err


def test_folders_give_their_npy_and_png_files_and_refuse_others(cli, tmp_path, capsys) -> None:
    from PIL import Image

    images = random_images(3, seed=15)
    folder = tmp_path / "mixed"
    folder.mkdir()
    np.save(folder / "a.npy", images[:2, 0].numpy())
    Image.fromarray(images[2, 0].numpy()).save(folder / "b.png")
    assert cli("encode", str(folder), "--output", str(tmp_path / "m.flz")) == 0
    assert "3 images" in capsys.readouterr().out
    assert cli("decode", str(tmp_path / "m.flz"), "--output", str(tmp_path / "m.npy")) == 0
    assert np.array_equal(np.load(tmp_path / "m.npy"), images.numpy())
    (folder / "notes.txt").write_text("not an image")
    assert cli("encode", str(folder), "--output", str(tmp_path / "n.flz")) == 1
    assert "notes.txt" in capsys.readouterr().err


def test_a_diverged_checkpoint_gives_a_one_line_error(tmp_path, capsys) -> None:
    tampered = tiny_model()
    with torch.no_grad():
        for parameter in tampered.parameters():
            parameter.mul_(1e30)
    save_checkpoint(tampered, "07_idf-bad", metadata={"config": tampered.config}, directory=tmp_path / "c")
    np.save(tmp_path / "v.npy", random_images(2).numpy())
    with pytest.raises(SystemExit) as exit_info:
        main(["encode", str(tmp_path / "v.npy"), "--output", str(tmp_path / "v.flz"), "--model", "07_idf-bad",
              "--checkpoint-dir", str(tmp_path / "c")])
    error = capsys.readouterr().err
    assert exit_info.value.code == 1 and "ExactArithmeticError" in error and "Traceback" not in error


# ------------------------------------------------------------------------------------------------- IDF edges
def test_idf_integer_path_edges(model: IDF) -> None:
    empty = model.forward_integer(torch.zeros(0, 1, 8, 8, dtype=torch.uint8))
    assert [tuple(z.shape) for z in empty] == [(0, 2, 4, 4), (0, 8, 2, 2)]
    assert model.inverse_integer(empty).shape == (0, 1, 8, 8)
    latents = model.forward_integer(random_images(2))
    broken = [latent.double() for latent in latents]
    broken[0][0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="not integers"):
        model.inverse_integer(broken)
    from flowlib.transforms import InputShapeError

    with pytest.raises(InputShapeError, match=r"divisible by 4; got \(3, 30, 30\)"):
        IDF((3, 30, 30))
