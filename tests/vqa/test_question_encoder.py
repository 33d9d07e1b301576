"""vqa.question_encoder: packed sequences make padding invisible; LSTM/GRU, layers, directions."""

import pytest
import torch

from captioning.core.errors import UserError
from vqa.question_encoder import QuestionEncoder, QuestionEncoderConfig


@pytest.mark.parametrize("rnn, layers, bidirectional", [("lstm", 1, False), ("gru", 2, True), ("lstm", 2, True)])
def test_padding_costs_nothing_and_changes_nothing(rnn, layers, bidirectional):
    torch.manual_seed(0)
    enc = QuestionEncoder(QuestionEncoderConfig(20, word_dim=8, rnn=rnn, rnn_dim=12, rnn_layers=layers,
                                                bidirectional=bidirectional)).eval()
    questions = torch.tensor([[5, 6, 7, 0, 0], [8, 9, 10, 11, 12], [4, 0, 0, 0, 0]])
    lengths = torch.tensor([3, 5, 1])
    out = enc(questions, lengths)
    assert out.shape == (3, 12 * (2 if bidirectional else 1)) == (3, enc.out_dim)
    # Each question alone, unpadded, and with a lot more padding: the same vector.
    for i in range(3):
        alone = enc(questions[i:i + 1, : lengths[i]], lengths[i:i + 1])
        padded = enc(torch.nn.functional.pad(questions[i:i + 1], (0, 7)), lengths[i:i + 1])
        torch.testing.assert_close(alone[0], out[i])
        torch.testing.assert_close(padded[0], out[i])


def test_word_order_matters():
    torch.manual_seed(0)
    enc = QuestionEncoder(QuestionEncoderConfig(20, word_dim=8, rnn_dim=12)).eval()
    a = enc(torch.tensor([[5, 6, 7]]), torch.tensor([3]))
    b = enc(torch.tensor([[7, 6, 5]]), torch.tensor([3]))
    assert not torch.allclose(a, b)


def test_bad_config_is_a_user_error():
    with pytest.raises(UserError, match="unknown question RNN"):
        QuestionEncoderConfig(rnn="transformer")
