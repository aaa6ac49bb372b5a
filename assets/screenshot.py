#!/usr/bin/env python3
"""Renders a tmux pane (captured with `tmux capture-pane -e -p`) to a PNG.

    tmux new-session -d -s shot -x 120 -y 32 'wbsessions demo'
    sleep 75; tmux send-keys -t shot Enter; sleep 1.5
    tmux capture-pane -e -p -t shot > shot.ans
    python3 assets/screenshot.py shot.ans assets/dashboard.png     (pip install pillow)
"""
import re
import sys

from PIL import Image, ImageDraw, ImageFont

BASE = [(0x1e, 0x1e, 0x1e), (0xcd, 0x31, 0x31), (0x0d, 0xbc, 0x79), (0xe5, 0xe5, 0x10),
        (0x24, 0x72, 0xc8), (0xbc, 0x3f, 0xbc), (0x11, 0xa8, 0xcd), (0xe5, 0xe5, 0xe5)]
BRIGHT = [(0x66, 0x66, 0x66), (0xf1, 0x4c, 0x4c), (0x23, 0xd1, 0x8b), (0xf5, 0xf5, 0x43),
          (0x3b, 0x8e, 0xea), (0xd6, 0x70, 0xd6), (0x29, 0xb8, 0xdb), (0xff, 0xff, 0xff)]
FG, BG = (0xd4, 0xd4, 0xd4), (0x1e, 0x1e, 0x1e)


def color256(n):
    if n < 8:
        return BASE[n]
    if n < 16:
        return BRIGHT[n - 8]
    if n < 232:
        n -= 16
        return tuple(0 if c == 0 else 55 + 40 * c for c in (n // 36, (n // 6) % 6, n % 6))
    v = 8 + 10 * (n - 232)
    return (v, v, v)


def parse(text):
    rows = []
    for line in text.rstrip("\n").split("\n"):
        fg, bg, bold, rev = FG, BG, False, False
        cells = []
        for part in re.split(r"(\x1b\[[0-9;]*m)", line):
            if part.startswith("\x1b["):
                codes = [int(c) if c else 0 for c in part[2:-1].split(";")]
                i = 0
                while i < len(codes):
                    c = codes[i]
                    if c == 0:
                        fg, bg, bold, rev = FG, BG, False, False
                    elif c == 1:
                        bold = True
                    elif c == 22:
                        bold = False
                    elif c == 7:
                        rev = True
                    elif c == 27:
                        rev = False
                    elif 30 <= c <= 37:
                        fg = BASE[c - 30]
                    elif 90 <= c <= 97:
                        fg = BRIGHT[c - 90]
                    elif 40 <= c <= 47:
                        bg = BASE[c - 40]
                    elif 100 <= c <= 107:
                        bg = BRIGHT[c - 100]
                    elif c == 39:
                        fg = FG
                    elif c == 49:
                        bg = BG
                    elif c in (38, 48) and i + 2 < len(codes) and codes[i + 1] == 5:
                        col = color256(codes[i + 2])
                        fg, bg = (col, bg) if c == 38 else (fg, col)
                        i += 2
                    elif c in (38, 48) and i + 4 < len(codes) and codes[i + 1] == 2:
                        col = tuple(codes[i + 2:i + 5])
                        fg, bg = (col, bg) if c == 38 else (fg, col)
                        i += 4
                    i += 1
            else:
                for ch in part:
                    f, b = (bg, fg) if rev else (fg, bg)
                    cells.append((ch, f, b, bold))
        rows.append(cells)
    return rows


def main(src, dst):
    rows = parse(open(src, encoding="utf-8").read())
    font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf", 15)
    bold = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSansMono-Bold.ttf", 15)
    cw, ch = 9, 19
    width = max(len(r) for r in rows)
    image = Image.new("RGB", (width * cw + 16, len(rows) * ch + 16), BG)
    draw = ImageDraw.Draw(image)
    for y, row in enumerate(rows):
        for x, (char, fg, bg, is_bold) in enumerate(row):
            left, top = 8 + x * cw, 8 + y * ch
            if bg != BG:
                draw.rectangle([left, top, left + cw - 1, top + ch - 1], fill=bg)
            if char != " ":
                draw.text((left, top + 1), char, font=bold if is_bold else font, fill=fg)
    image.save(dst)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
