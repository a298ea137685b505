import numpy as np
import pytest

from onion.config import DataConfig
from onion.data import (encode_text, make_das_valid, make_datasets, make_validation, random_sequences,
                        read_sequences, sequence_keys, write_sequences)


def test_same_config_gives_byte_identical_files(tmp_path, small_data_cfg):
    for run in ("a", "b"):
        train, valid = make_datasets(small_data_cfg)
        write_sequences(tmp_path / run / "train.parquet", train)
        write_sequences(tmp_path / run / "valid.parquet", valid)
        write_sequences(tmp_path / run / "das_valid.parquet", make_das_valid(small_data_cfg, train, valid))
    for name in ("train.parquet", "valid.parquet", "das_valid.parquet"):
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


# --- the distinct training set (the authors' generator) ----------------------------------------

def _expected_mix(spaces: dict[int, int], n: int) -> dict[int, float]:
    """Length shares of the first n distinct draws of a uniform-length sampler, in the large-n limit:
    after T draws, length k (S_k sequences) holds S_k·(1 − exp(−T / (K·S_k))) distinct ones."""
    def distinct(t):
        return {k: s * (1 - np.exp(-t / (len(spaces) * s))) for k, s in spaces.items()}
    low, high = float(n), 1e9
    for _ in range(200):  # bisection on the number of draws T
        mid = (low + high) / 2
        low, high = (mid, high) if sum(distinct(mid).values()) < n else (low, mid)
    return {k: v / n for k, v in distinct(low).items()}


def test_distinct_training_set_is_distinct_disjoint_and_has_the_expected_length_mix():
    cfg = DataConfig(n_symbols=4, min_length=2, max_length=6, n_train=3000, n_valid=20, seed=2,
                     das_length=6, n_das_valid=50)
    train, valid = make_datasets(cfg)
    keys = sequence_keys(train.tokens, train.lengths, cfg.n_symbols)
    assert len(np.unique(keys)) == len(keys) == 3000
    valid_keys = sequence_keys(valid.tokens, valid.lengths, cfg.n_symbols)
    assert not np.isin(valid_keys, keys).any()
    excluded = np.bincount(valid.lengths, minlength=7)
    spaces = {k: 4 ** k - excluded[k] for k in range(2, 7)}
    expected = _expected_mix(spaces, 3000)
    counts = np.bincount(train.lengths, minlength=7)
    for k, share in expected.items():
        sampling_sd = np.sqrt(3000 * share * (1 - share))
        assert abs(counts[k] - 3000 * share) <= 4 * sampling_sd + 2, (k, counts[k], 3000 * share)
    assert counts[2] == spaces[2]  # length 2 runs out: every sequence outside validation is used


def test_paper_config_length_mix():
    """The authors' mix: about 0.07% length 2, 2.6% length 3, 14.9% length 4, 16.5% each of 5-9.
    The sampler follows _expected_mix (the test above, on a small vocabulary); here the paper's
    1M-sequence set is checked through it and its validation set, without drawing 1M sequences."""
    cfg = DataConfig()
    valid = make_validation(cfg, np.random.default_rng(cfg.seed))  # drawn first, as make_datasets does
    excluded = np.bincount(valid.lengths, minlength=10)
    share = _expected_mix({k: 30 ** k - excluded[k] for k in range(2, 10)}, cfg.n_train)
    assert excluded[2] == 180 and abs(share[2] * cfg.n_train - 720) < 1  # all 720 left are used
    assert abs(share[3] - 0.026) < 0.001 and abs(share[4] - 0.149) < 0.001
    assert all(abs(share[k] - 0.165) < 0.002 for k in range(5, 10))


def test_paper_vocabulary_training_set_drawn_for_real():
    """The generator itself at the paper's settings (30 symbols, 1M sequences; about 5 s): all
    distinct, none in validation, and the documented mix: 720 of length 2 (all outside validation),
    2.63 % length 3, 14.90 % length 4, 16.4-16.6 % each of lengths 5-9."""
    cfg = DataConfig()
    train, valid = make_datasets(cfg)
    keys = sequence_keys(train.tokens, train.lengths, cfg.n_symbols)
    assert len(keys) == 1_000_000 and len(np.unique(keys)) == len(keys)
    assert not np.isin(sequence_keys(valid.tokens, valid.lengths, cfg.n_symbols), keys).any()
    share = np.bincount(train.lengths, minlength=10) / len(keys)
    assert round(share[2] * len(keys)) == 720 and share[:2].sum() == 0
    assert abs(share[3] - 0.0263) < 0.0005 and abs(share[4] - 0.1490) < 0.0005
    assert all(0.164 <= share[k] <= 0.166 for k in range(5, 10)), share


def test_iid_training_set_has_repeats_and_uniform_lengths(small_data_cfg):
    cfg = DataConfig(**{**small_data_cfg.__dict__, "train_sampling": "iid"})
    train, valid = make_datasets(cfg)
    keys = sequence_keys(train.tokens, train.lengths, 30)
    assert len(np.unique(keys)) < len(keys)  # length 2 has 720 sequences for ~2,500 draws
    assert np.all(np.abs(np.bincount(train.lengths)[2:] / len(train) - 1 / 8) < 0.01)
    assert not np.isin(sequence_keys(valid.tokens, valid.lengths, 30), keys).any()


def test_das_validation_set_is_its_own(small_data_cfg):
    train, valid = make_datasets(small_data_cfg)
    das = make_das_valid(small_data_cfg, train, valid)
    assert len(das) == 5000 and (das.lengths == 9).all()
    das_keys = sequence_keys(das.tokens, das.lengths, 30)
    assert len(np.unique(das_keys)) == 5000
    for other in (train, valid):
        assert not np.isin(das_keys, sequence_keys(other.tokens, other.lengths, 30)).any()
    again = make_das_valid(small_data_cfg, *make_datasets(small_data_cfg))
    assert np.array_equal(again.tokens, das.tokens)


def test_impossible_distinct_set_is_an_error():
    cfg = DataConfig(n_symbols=3, min_length=2, max_length=3, n_train=100, n_valid=5, das_length=3)
    with pytest.raises(ValueError, match="data.n_train"):
        make_datasets(cfg)
