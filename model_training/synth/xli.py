"""XLI, the compression of Philips SierraECG / PhilipsECG rhythm waveforms: an encoder.

Written from the layout that readers (sierraecg, ecgdatakit) decode, run backwards. One chunk per lead:

    int32 LE  size of the compressed body       int16  unused (0)       int16 LE  `start`
    body: LZW, 10-bit codes packed most significant bit first, codes 256..1022 learnt as they go,
          no clear code; it decompresses to 2n bytes: the n high bytes, then the n low bytes,
          of n int16 codes.

The codes are a second difference, shifted one place: codes 0 and 1 are the first two samples; sample i >= 2 is
`2*s[i-1] - s[i-2] - e_i`, where e_2 is the header's `start` and e_i (i >= 3) is `code[i-1] - 64`. The last
code is never read and is written as 0.
"""

from __future__ import annotations

import struct

import numpy as np

LZW_BITS = 10
LZW_MAX_CODE = (1 << LZW_BITS) - 2  # the readers' dictionary stops here; 1023 is never a valid code


def lzw_encode(data: bytes, bits: int = LZW_BITS) -> bytes:
    """LZW as the XLI readers decode it: fixed `bits`-wide codes, MSB first, the dictionary frozen when full."""
    max_code = (1 << bits) - 2
    table: dict[bytes, int] = {bytes([b]): b for b in range(256)}
    next_code = 256
    codes: list[int] = []
    word = b""
    for value in data:
        grown = word + bytes([value])
        if grown in table:
            word = grown
            continue
        codes.append(table[word])
        if next_code <= max_code:
            table[grown] = next_code
            next_code += 1
        word = bytes([value])
    if word:
        codes.append(table[word])
    out = bytearray()
    buffer, held = 0, 0
    for code in codes:
        buffer = (buffer << bits) | code
        held += bits
        while held >= 8:
            held -= 8
            out.append((buffer >> held) & 0xFF)
        buffer &= (1 << held) - 1
    if held:  # fewer than `bits` padding bits: the reader sees the end of the stream
        out.append((buffer << (8 - held)) & 0xFF)
    return bytes(out)


def delta_codes(samples: np.ndarray) -> tuple[np.ndarray, int]:
    """The int16 codes and the header's `start` for one lead (see the module docstring)."""
    s = np.asarray(samples, dtype=np.int64)
    n = s.size
    if n < 2:
        raise ValueError("an XLI lead needs at least two samples")
    codes = np.zeros(n, dtype=np.int64)
    codes[:2] = s[:2]
    residual = 2 * s[1:-1] - s[:-2] - s[2:]  # e_i for i = 2 .. n-1
    start = int(residual[0]) if residual.size else 0
    if residual.size > 1:
        codes[2 : n - 1] = residual[1:] + 64
    if codes.min(initial=0) < -32768 or codes.max(initial=0) > 32767 or not -32768 <= start <= 32767:
        raise ValueError("lead too steep for XLI: a second difference does not fit in 16 bits")
    return codes.astype(np.int16), start


def xli_encode_lead(samples: np.ndarray) -> bytes:
    codes, start = delta_codes(samples)
    words = codes.view(np.uint16)
    body = lzw_encode((words >> 8).astype(np.uint8).tobytes() + (words & 0xFF).astype(np.uint8).tobytes())
    return struct.pack("<ihh", len(body), 0, start) + body


def xli_encode(leads: np.ndarray) -> bytes:
    """XLI chunks of every lead in order (leads x samples of integer counts), concatenated."""
    return b"".join(xli_encode_lead(lead) for lead in np.asarray(leads))
