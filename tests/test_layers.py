import numpy as np
import pytest

from helpers import run_layer_checks
from keras_mm.layers import (PositionEmbedding, TemporalConvNet,
                             TransformerEncoder)

RNG = np.random.RandomState(0)
SEQ = RNG.normal(size=(4, 6, 8)).astype("float32")


def test_transformer_encoder(tmp_path):
    run_layer_checks(TransformerEncoder,
                     {"num_layers": 2, "num_heads": 2, "dropout": 0.0},
                     SEQ, tmp_path=tmp_path, expected_output_shape=(4, 6, 8))


def test_transformer_encoder_ignores_padded_tokens():
    layer = TransformerEncoder(num_layers=1, num_heads=2, dropout=0.0)
    mask = np.array([[True] * 4 + [False] * 2] * 4)
    other = SEQ.copy()
    other[:, 4:] = 100.0
    a = np.asarray(layer(SEQ, mask=mask))
    b = np.asarray(layer(other, mask=mask))
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert np.all(a[:, 4:] == 0)


def test_transformer_encoder_padded_equals_truncated():
    """Row r with padding masked == the same layer on row r's valid
    tokens only (the attention key mask does the work: nothing is zeroed
    before the attention)."""
    layer = TransformerEncoder(num_layers=2, num_heads=2, dropout=0.0)
    lengths = [6, 4, 1, 3]
    mask = np.arange(6)[None, :] < np.array(lengths)[:, None]
    out = np.asarray(layer(SEQ, mask=mask))
    for r, n in enumerate(lengths):
        np.testing.assert_allclose(out[r, :n],
                                   np.asarray(layer(SEQ[r:r + 1, :n]))[0],
                                   atol=1e-5, err_msg=f"row {r}")


def test_temporal_conv_net(tmp_path):
    out = run_layer_checks(TemporalConvNet,
                           {"filters": 8, "dilations": [1, 2], "dropout": 0.0},
                           SEQ, tmp_path=tmp_path,
                           expected_output_shape=(4, 6, 8))
    assert out.shape == (4, 6, 8)


def test_temporal_conv_net_is_causal():
    layer = TemporalConvNet(filters=4, dilations=[1, 2], dropout=0.0)
    other = SEQ.copy()
    other[:, 3:] += 5.0
    a, b = np.asarray(layer(SEQ)), np.asarray(layer(other))
    np.testing.assert_allclose(a[:, :3], b[:, :3], atol=1e-5)
    assert not np.allclose(a[:, 3:], b[:, 3:])


def test_position_embedding(tmp_path):
    run_layer_checks(PositionEmbedding, {"sequence_length": 10}, SEQ,
                     tmp_path=tmp_path, expected_output_shape=(4, 6, 8))


def test_position_embedding_too_long_fails():
    with pytest.raises(ValueError, match=r"6 positions but sequence_length=4"):
        PositionEmbedding(sequence_length=4)(SEQ)
    layer = PositionEmbedding(sequence_length=6)
    layer(SEQ)  # built: a longer input later fails the same way
    with pytest.raises(ValueError, match="sequence_length=6"):
        layer(np.concatenate([SEQ, SEQ], axis=1))
