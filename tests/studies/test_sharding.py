"""How ZeRO, tensor and pipeline parallelism divide training memory (reference/studies/sharding.py): the ZeRO paper's
own example, the devices GPT-3 needs, and the activation formula's parts."""
import pytest

from reference.studies import counting, sharding


def test_zero_paper_figure_1():
    # Rajbhandari et al. 2020, figure 1: 7.5 B parameters, K = 12, 64 data-parallel GPUs:
    # 120 GB, 31.4 GB, 16.6 GB, 1.9 GB per GPU for stages 0, 1, 2, 3
    got = [sharding.state_bytes(7.5e9, "mixed", zero, dp=64)["total"] / 1e9 for zero in range(4)]
    assert got == pytest.approx([120, 31.4, 16.6, 1.9], abs=0.05)


def test_both_recipes_cost_16_bytes_per_parameter():
    # the float32 master copy costs what mixed precision saves on weights and gradients (as counting.py says)
    for recipe in sharding.RECIPES:
        assert sharding.state_bytes(1000, recipe)["total"] == 16_000
    mixed = counting.training_memory(1000, weights="bfloat16", grads="bfloat16", master_weights="float32")
    assert mixed["total"] == sharding.state_bytes(1000, "mixed")["total"]


def test_tensor_and_pipeline_parallelism_divide_everything():
    one = sharding.state_bytes(1e9, "mixed", zero=1, dp=4)
    split = sharding.state_bytes(1e9, "mixed", zero=1, dp=4, tp=8, pp=2)
    assert all(split[k] == pytest.approx(one[k] / 16) for k in one)


def test_devices_gpt3_needs_at_80_gb():
    n = counting.param_count(counting.GPT3_175B)["total"]                # 174.6 B
    # 16 bytes x 174.6 B = 2.79 TB of states. ZeRO-1 and -2 leave 4 or 2 bytes per parameter (700 or 350 GB) on
    # every device: no number of replicas fits them in 80 GB. ZeRO-3 needs ceil(2.79 TB / 80 GB) = 35.
    assert [sharding.devices_needed(n, 80e9, zero=z) for z in range(4)] == [None, None, None, 35]
    # tensor x pipeline parallelism of 8 x 8: 43.7 GB of states per device, one replica of 64 devices
    assert sharding.devices_needed(n, 80e9, tp=8, pp=8) == 64
    assert sharding.devices_needed(n, 80e9, tp=4, pp=4) is None                  # 175 GB per device
    assert sharding.devices_needed(n, 80e9, zero=1, tp=4, pp=4) == 16 * 4        # 43.7 + 131 / N_d <= 80: N_d = 4
    with pytest.raises(ValueError, match="ZeRO stage"):
        sharding.state_bytes(n, zero=4)


def test_activation_formula():
    s, b, h, a = 2048, 1, 12288, 96                                              # GPT-3's layer, one sequence
    sbh = s * b * h
    assert sharding.activation_bytes_per_layer(s, b, h, a) == pytest.approx(sbh * 34 + 5 * a * s * s * b)
    assert sharding.activation_bytes_per_layer(s, b, h, a, recompute=True) == 2 * sbh
    # tensor parallelism splits all but the 10 sbh of the LayerNorm inputs, dropout masks and the block inputs
    t8 = sharding.activation_bytes_per_layer(s, b, h, a, tp=8)
    assert t8 == pytest.approx(sbh * 10 + (24 * sbh + 5 * a * s * s * b) / 8)


def test_communication_volumes():
    assert sharding.ring_bytes(1000, 2) == 1000 and sharding.ring_bytes(1000, 4) == 1500
    assert sharding.ring_bytes(1000, 1) == 0                                   # alone: nothing to send
    # ZeRO-3 gathers the weights twice and reduce-scatters the gradients: 3 (W-1)/W, 1.5 x data parallelism
    assert sharding.dp_bytes_per_step(8e9, 64, zero=3) == 1.5 * sharding.dp_bytes_per_step(8e9, 64)
    # tensor parallelism: 4 all-reduces of s b h activations per layer, 6 with recomputation (the forward again)
    assert sharding.tp_bytes_per_layer(2048, 1, 12288, 8) == 4 * 1.75 * 2048 * 12288 * 2
    assert sharding.tp_bytes_per_layer(2048, 1, 12288, 8, recompute=True) == 6 * 1.75 * 2048 * 12288 * 2
