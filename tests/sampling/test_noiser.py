"""The one noiser (`latents.noiser`) against ltx-core's `GaussianNoiser`, the x0 conversion of the transformer passes,
and the training objective's flow-matching noising written out by hand."""

from __future__ import annotations

import ltx_reference  # noqa: F401  (stubs torchaudio before ltx_core is imported)
import pytest
import torch
from ltx_core.components.noisers import GaussianNoiser
from ltx_core.types import LatentState

from diffusers_ltx2.latents.noiser import noise_tokens, noised_state, per_token_timesteps
from diffusers_ltx2.latents.state import ModalityLatents
from diffusers_ltx2.transformer.passes import _to_x0


def _state(b=2, n=6, c=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    clean = torch.randn(b, n, c, generator=g)
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.5, 1.0, 0.0]] * b)[:, :n]
    return ModalityLatents(latent=clean.clone(), clean=clean, denoise_mask=mask, coords=torch.zeros(b, 1, n, 2),
                           num_target_tokens=n)


@pytest.mark.parametrize("noise_scale", [1.0, 0.909375, 0.0])
def test_noised_state_is_ltx_core_gaussian_noiser(noise_scale):
    """Same generator -> the same noise draw and the same mix `noise * m + clean * (1 - m)`, `m = mask * scale`."""
    state = _state()
    ours = noised_state(state, torch.Generator().manual_seed(7), noise_scale=noise_scale)
    official = GaussianNoiser(torch.Generator().manual_seed(7))(
        LatentState(latent=state.clean.clone(), denoise_mask=state.denoise_mask.unsqueeze(-1), positions=None,
                    clean_latent=state.clean.clone()), noise_scale)
    torch.testing.assert_close(ours.latent, official.latent, rtol=0, atol=0)
    held = state.denoise_mask == 0
    assert torch.equal(ours.latent[held], state.clean[held])  # conditioned tokens stay clean


def test_given_noise_covers_the_leading_tokens_and_the_rest_is_drawn():
    state = _state(b=1)
    noise = torch.randn(1, 4, 4, generator=torch.Generator().manual_seed(3))
    out = noised_state(state, torch.Generator().manual_seed(5), noise=noise)
    m = state.denoise_mask.unsqueeze(-1)
    extra = torch.randn(1, 2, 4, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(out.latent, torch.cat([noise, extra], 1) * m + state.clean * (1 - m), rtol=0, atol=0)


def test_flow_matching_noising_and_x0_recovery():
    """Training's sigma per sample: `(1 - s) x0 + s noise` where the mask is 1, x0 where it is 0 (the official
    trainer, written out); the velocity `noise - x0` at the tokens' timesteps gives x0 back (the passes' x0)."""
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(3, 5, 4, generator=g), torch.randn(3, 5, 4, generator=g)
    sigma = torch.tensor([0.9, 0.4, 0.05])
    mask = torch.ones(3, 5)
    mask[1, :2] = 0.0  # a clean first frame in sample 1
    noisy = noise_tokens(x0, mask, noise, sigma)
    s = sigma.view(-1, 1, 1)
    by_hand = torch.where(mask.unsqueeze(-1) > 0, (1 - s) * x0 + s * noise, x0)
    assert torch.equal(noisy, by_hand)
    timesteps = per_token_timesteps(mask, sigma.view(-1, 1))
    torch.testing.assert_close(_to_x0(noisy, noise - x0, timesteps), x0, atol=1e-5, rtol=0)
    uniform = per_token_timesteps(torch.ones(3, 5), sigma.view(-1, 1))
    assert uniform.shape == (3, 1)  # one level per row when every token shares it
