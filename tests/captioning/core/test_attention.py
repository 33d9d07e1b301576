import torch

from captioning.core.attention import SoftAttention


def test_attention_sums_to_one_and_weights_the_context():
    torch.manual_seed(0)
    att = SoftAttention(feature_dim=8, query_dim=5, attention_dim=6, glimpses=2)
    feats = torch.randn(3, 10, 8)  # (N, P, C)
    context, alpha = att(feats, att.project(feats), torch.randn(3, 5))
    assert context.shape == (3, 2, 8) and alpha.shape == (3, 2, 10)
    torch.testing.assert_close(alpha.sum(-1), torch.ones(3, 2))
    torch.testing.assert_close(context, torch.einsum("ngp,npc->ngc", alpha, feats))


def test_attention_can_pick_out_one_cell():
    # A query that matches one cell's projection must put most weight there once trained.
    torch.manual_seed(0)
    att = SoftAttention(4, 4, 8)
    feats = torch.eye(4).unsqueeze(0).repeat(16, 1, 1)  # 4 one-hot cells
    target = torch.arange(16) % 4
    query = torch.nn.functional.one_hot(target, 4).float()
    opt = torch.optim.Adam(att.parameters(), lr=0.05)
    for _ in range(200):
        _, alpha = att(feats, att.project(feats), query)
        loss = torch.nn.functional.nll_loss(alpha.squeeze(1).log(), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    _, alpha = att(feats, att.project(feats), query)
    assert (alpha.squeeze(1).argmax(-1) == target).all()
    assert alpha.squeeze(1).max(-1).values.min() > 0.8
