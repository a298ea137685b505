"""onion: reproduce and extend Csordás et al. (2024), onion representations in small GRUs."""

__version__ = "0.1.0"
