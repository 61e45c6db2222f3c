"""The one tiling behind the synthetic gallery and `ecg-intake preprocess --sheet`."""

from __future__ import annotations

import numpy as np
import pytest

from model_training.contact_sheet import BORDER, LABEL_BAND, contact_sheet


def test_tiles_keep_their_aspect_fill_short_rows_white_and_share_a_row_height() -> None:
    wide, tall = np.zeros((100, 400), np.uint8), np.zeros((300, 200), np.uint8)
    sheet = contact_sheet([("a", wide), ("b", tall), ("c", wide)], columns=2, width=100)
    tile_w, tile_h = 100 + 2 * BORDER, 150 + LABEL_BAND + BORDER  # the tall page sets its row's height
    assert sheet.shape == (2 * tile_h, 2 * tile_w)
    assert (sheet[tile_h:, tile_w:] == 255).all()  # the missing fourth tile
    assert (sheet[LABEL_BAND : LABEL_BAND + 25, BORDER : 100 + BORDER] == 0).all()  # `wide`, 25 px high
    assert (sheet[LABEL_BAND + 25 : tile_h, :tile_w] == 255).all()  # padded to the row's height


def test_a_fixed_aspect_and_colour_pages() -> None:
    pages = [(f"p{i}", np.full((50, 80, 3), 40 * i, np.uint8)) for i in range(6)]
    sheet = contact_sheet(pages, columns=3, width=100, aspect=0.72)
    assert sheet.shape == (2 * (72 + LABEL_BAND + BORDER), 3 * (100 + 2 * BORDER), 3)
    with pytest.raises(ValueError, match="at least one"):
        contact_sheet([], columns=3, width=100)
