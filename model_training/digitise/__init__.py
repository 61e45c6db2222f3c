"""Paper back to signal: a page's 12 leads read off as millivolts, and how close that reading is to the truth."""
