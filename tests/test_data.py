import numpy as np
import pytest

from onion.config import DataConfig
from onion.data import (encode_text, make_datasets, random_sequences, read_sequences,
                        sequence_keys, write_sequences)


def test_same_config_gives_byte_identical_files(tmp_path, small_data_cfg):
    for run in ("a", "b"):
        train, valid = make_datasets(small_data_cfg)
        write_sequences(tmp_path / run / "train.parquet", train)
        write_sequences(tmp_path / run / "valid.parquet", valid)
    for name in ("train.parquet", "valid.parquet"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_other_seed_gives_other_data(small_data_cfg):
    a, _ = make_datasets(small_data_cfg)
    b, _ = make_datasets(DataConfig(**{**small_data_cfg.__dict__, "seed": 4}))
    assert not np.array_equal(a.tokens, b.tokens)


def test_validation_disjoint_from_train(small_data_cfg):
    train, valid = make_datasets(small_data_cfg)
    train_keys = sequence_keys(train.tokens, train.lengths, small_data_cfg.n_symbols)
    valid_keys = sequence_keys(valid.tokens, valid.lengths, small_data_cfg.n_symbols)
    assert len(np.unique(valid_keys)) == len(valid_keys)  # no duplicates inside validation
    assert not np.isin(valid_keys, train_keys).any()


def test_sizes_lengths_and_vocabulary(small_data_cfg):
    train, valid = make_datasets(small_data_cfg)
    assert len(train) == small_data_cfg.n_train and len(valid) == small_data_cfg.n_valid
    for data in (train, valid):
        assert data.lengths.min() == 2 and data.lengths.max() == 9
        assert data.tokens.min() >= 0 and data.tokens.max() < 30
        beyond = np.arange(9)[None, :] >= data.lengths[:, None]
        assert (data.tokens[beyond] == 0).all()


def test_validation_capped_per_length():
    # 3 symbols, lengths 2..4: 9, 27 and 81 possible sequences -> caps 1, 5 and 16 at 20%
    cfg = DataConfig(n_symbols=3, min_length=2, max_length=4, n_train=2000, n_valid=20, seed=1,
                     train_sampling="iid", das_length=4)
    train, valid = make_datasets(cfg)
    counts = np.bincount(valid.lengths, minlength=5)
    assert counts[2] <= 1 and counts[3] <= 5 and counts[4] <= 16 and counts.sum() == 20
    # length 2 of the paper's task: at most 180 of the 900 sequences
    _, paper_valid = make_datasets(DataConfig(n_train=1000, n_valid=5000))
    assert (paper_valid.lengths == 2).sum() <= 180


def test_too_many_validation_sequences_is_an_error():
    cfg = DataConfig(n_symbols=3, min_length=2, max_length=3, n_train=10, n_valid=50, das_length=3)
    with pytest.raises(ValueError, match="n_valid"):
        make_datasets(cfg)


def test_parquet_round_trip(tmp_path, rng):
    data = random_sequences(rng, 100, DataConfig())
    write_sequences(tmp_path / "d.parquet", data)
    back = read_sequences(tmp_path / "d.parquet", 9)
    assert np.array_equal(back.tokens, data.tokens) and np.array_equal(back.lengths, data.lengths)


def test_reading_a_foreign_file_names_it(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    path = tmp_path / "other.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), path)
    with pytest.raises(ValueError, match="other.parquet"):
        read_sequences(path)


def test_encode_text():
    assert encode_text("ab1c") == [10, 11, 1, 12]
    with pytest.raises(ValueError):
        encode_text("z", n_symbols=30)  # z is the 36th symbol
