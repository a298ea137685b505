"""The repeat-task model (onion.model.rnn) and its recurrent cells (onion.model.cells)."""

from onion.model.cells import GATES, cell_step, gru_step, make_cell
from onion.model.rnn import RepeatRNN, check_finite, load_model, save_model, sequence_loss

__all__ = ["GATES", "RepeatRNN", "cell_step", "check_finite", "gru_step", "load_model", "make_cell",
           "save_model",
           "sequence_loss"]
