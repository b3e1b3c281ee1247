"""Worked solutions to the exercises of chapter 10 ("FAQ"), checked by ``tests/book/test_solutions_10.py``."""
import math

from reference.studies import counting

GIB = 2**30


def accelerators_for_training_state(n_params=7e9, device_gib=80):
    """Exercise 1: 16 bytes per parameter in mixed precision with Adam: 7e9 * 16 B = 104 GiB -> 2 devices."""
    state = counting.training_memory(n_params, weights="bfloat16", master_weights="float32")["total"]
    return math.ceil(state / (device_gib * GIB))


def kv_cache_tokens(n_params=7e9, n_layer=32, d_model=4096, device_gib=80):
    """Exercise 2: weights take 2 B/param (13.0 GiB); each token's cache is 2 * L * d * 2 B = 512 KiB,
    so the remaining 67 GiB hold about 137 k tokens.
    """
    free = device_gib * GIB - 2 * n_params
    per_token = 2 * n_layer * d_model * 2
    return int(free // per_token)
