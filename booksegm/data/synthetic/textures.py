"""Colours and textures of books, boards, walls and table tops, drawn from a random generator."""

import colorsys

import cv2
import numpy as np

FONTS = (
    cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX,
    cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_COMPLEX_SMALL,
)
ACCENTS = ((212, 175, 55), (236, 230, 214), (22, 22, 22), (192, 192, 198), (150, 24, 28))
DARK_INKS = ((18, 18, 18), (70, 20, 20), (20, 30, 70), (40, 40, 40))
LIGHT_INKS = ((245, 240, 225), (212, 175, 55), (250, 250, 250), (225, 215, 180))
WOODS = ((200, 160, 110), (110, 70, 42), (125, 58, 38), (218, 184, 135), (70, 48, 34), (160, 120, 80))
PAINTED = ((232, 230, 224), (40, 38, 36), (120, 125, 130), (200, 190, 170))
WALLS = (
    (236, 234, 228), (222, 206, 182), (172, 174, 178), (190, 206, 216),
    (182, 192, 160), (192, 124, 96), (78, 82, 88), (238, 226, 200),
)
CLOTHS = ((170, 40, 40), (40, 60, 110), (220, 220, 210), (70, 110, 70), (150, 150, 150))
PAPER = (236, 228, 204)


def jitter(rng, colour, amount: float = 12) -> np.ndarray:
    return np.clip(np.asarray(colour, np.float32) + rng.uniform(-amount, amount, 3), 0, 255)


def pick(rng, options):
    return options[rng.integers(len(options))]


def book_colour(rng) -> np.ndarray:
    if rng.random() < 0.15:  # black, white, cream and greys are common bindings
        h, s, v = rng.random(), rng.uniform(0, 0.15), rng.uniform(0.08, 0.95)
    else:
        h, s, v = rng.random(), rng.uniform(0.25, 0.9), rng.uniform(0.2, 0.9)
    return np.array(colorsys.hsv_to_rgb(h, s, v), np.float32) * 255


def ink_for(rng, colour) -> tuple:
    luminance = 0.3 * colour[0] + 0.59 * colour[1] + 0.11 * colour[2]
    return tuple(float(c) for c in pick(rng, DARK_INKS if luminance > 135 else LIGHT_INKS))


def random_words(rng) -> str:
    words = ["".join(chr(65 + k) for k in rng.integers(0, 26, rng.integers(2, 9))) for _ in range(rng.integers(1, 4))]
    text = " ".join(words)
    return text if rng.random() < 0.6 else text.title()


def put_text(rng, texture, text, box_x, box_y, box_w, box_h, ink) -> None:
    """Write text scaled to fit a box (x, y, w, h), vertically centred in it."""
    font = pick(rng, FONTS)
    (tw, th), _ = cv2.getTextSize(text, font, 1.0, 1)
    scale = min(box_w / tw, box_h / th)
    if scale * th < 2:  # too small to read even as marks
        return
    weight = 2 if scale * th > 14 and rng.random() < 0.5 else 1
    baseline = box_y + (box_h + scale * th) / 2
    cv2.putText(texture, text, (int(box_x), int(baseline)), font, scale, ink, weight, cv2.LINE_AA)


def smooth_noise(rng, height: int, width: int, cells_y: int, cells_x: int) -> np.ndarray:
    """Values in about [0, 1] varying smoothly over the given number of cells."""
    grid = rng.random((max(cells_y, 1) + 1, max(cells_x, 1) + 1)).astype(np.float32)
    return cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)


def shaded(texture: np.ndarray, shade: np.ndarray) -> np.ndarray:
    return np.clip(texture.astype(np.float32) * shade, 0, 255).astype(np.uint8)


def spine_texture(rng, length: float, thickness: float, colour) -> np.ndarray:
    """A spine as a strip: columns run along the book's height, rows across its thickness."""
    L, T = max(round(length), 2), max(round(thickness), 2)
    tex = np.empty((T, L, 3), np.uint8)
    tex[:] = colour
    ink = ink_for(rng, colour)
    accent = tuple(float(c) for c in pick(rng, ACCENTS)) if rng.random() < 0.6 else ink
    for _ in range(rng.integers(0, 3)):  # decorative bands, mirrored at both ends
        at, width = rng.uniform(0.02, 0.16) * L, max(1, int(rng.uniform(0.004, 0.03) * L))
        tex[:, int(at):int(at) + width] = accent
        tex[:, L - int(at) - width:L - int(at)] = accent
    title_from, title_to = rng.uniform(0.18, 0.35) * L, rng.uniform(0.65, 0.85) * L
    if rng.random() < 0.35:  # a title panel in another colour
        panel = book_colour(rng)
        inset = int(T * rng.uniform(0, 0.2))
        tex[inset:T - inset, int(title_from):int(title_to)] = panel
        ink = ink_for(rng, panel)
    put_text(rng, tex, random_words(rng), title_from + 1, T * 0.2, title_to - title_from - 2, T * 0.6, ink)
    if rng.random() < 0.7:  # author or publisher near the foot
        put_text(rng, tex, random_words(rng), L * 0.04, T * 0.3, L * 0.12, T * 0.4, ink)
    across = (np.arange(T) + 0.5) / T
    rounding = 0.7 + 0.3 * np.sin(np.pi * across) ** 0.7  # a rounded spine is darker at its edges
    scuffs = 1 + 0.08 * (smooth_noise(rng, 1, L, 1, max(L // 6, 1)) - 0.5)
    return shaded(tex, rounding[:, None, None] * scuffs[..., None])


def cover_texture(rng, width: float, height: float, colour) -> np.ndarray:
    """A front cover: title, author, and sometimes a picture, a band or a frame."""
    W, H = max(round(width), 2), max(round(height), 2)
    tex = np.empty((H, W, 3), np.uint8)
    tex[:] = colour
    ink = ink_for(rng, colour)
    style = rng.random()
    if style < 0.45:  # a picture: two-colour gradient, sometimes with a disc
        x0, x1 = int(W * rng.uniform(0, 0.15)), int(W * rng.uniform(0.85, 1))
        y0, y1 = int(H * rng.uniform(0.3, 0.45)), int(H * rng.uniform(0.75, 0.92))
        ramp = np.linspace(0, 1, max(y1 - y0, 1), dtype=np.float32)[:, None, None]
        top, bottom = book_colour(rng), book_colour(rng)
        tex[y0:y1, x0:x1] = (top * (1 - ramp) + bottom * ramp).astype(np.uint8)
        if rng.random() < 0.5:
            centre = (int(rng.uniform(x0, x1)), int(rng.uniform(y0, y1)))
            radius = int(rng.uniform(0.08, 0.25) * W)
            cv2.circle(tex, centre, radius, tuple(float(c) for c in book_colour(rng)), -1, cv2.LINE_AA)
    elif style < 0.7:  # a band across the cover
        y0 = int(H * rng.uniform(0.1, 0.6))
        tex[y0:y0 + int(H * rng.uniform(0.1, 0.3))] = book_colour(rng)
    if rng.random() < 0.3:
        inset = max(1, int(W * 0.06))
        cv2.rectangle(tex, (inset, inset), (W - inset, H - inset), ink, 1, cv2.LINE_AA)
    put_text(rng, tex, random_words(rng), W * 0.12, H * 0.08, W * 0.76, H * 0.14, ink)
    if rng.random() < 0.5:
        put_text(rng, tex, random_words(rng), W * 0.15, H * 0.2, W * 0.7, H * 0.09, ink)
    put_text(rng, tex, random_words(rng), W * 0.25, H * 0.9, W * 0.5, H * 0.06, ink)
    hinge = np.ones(W, np.float32)
    hinge[: max(1, W // 25)] = 0.8  # the fold beside the spine
    light = np.linspace(1.06, 0.9, H, dtype=np.float32)
    return shaded(tex, light[:, None, None] * hinge[None, :, None])


def page_texture(rng, length: float, thickness: float) -> np.ndarray:
    """Edges of the pages: fine lines along the book."""
    L, T = max(round(length), 2), max(round(thickness), 2)
    lines = 0.8 + 0.2 * rng.random((T, 1, 1))
    return np.broadcast_to(shaded(jitter(rng, PAPER, 10)[None, None], lines), (T, L, 3)).copy()


def wood_texture(rng, height: int, width: int, colour, vertical: bool = False) -> np.ndarray:
    if vertical:
        return wood_texture(rng, width, height, colour).transpose(1, 0, 2)
    rows = np.arange(height, dtype=np.float32)[:, None]
    # growth rings: long lines along the board whose spacing varies and which wander a little
    spacing = 1 + 0.6 * smooth_noise(rng, height, 1, 8, 1)
    wander = rng.uniform(0.3, 1.5) * smooth_noise(rng, height, width, 2, 3)
    phase = rows / rng.uniform(4, 12) * spacing + wander
    rings = (0.5 + 0.5 * np.sin(2 * np.pi * phase)) ** 4
    fibres = smooth_noise(rng, height, width, height // 2, width // 30)
    shade = 0.78 + 0.12 * rings + 0.1 * fibres
    return shade[..., None] * jitter(rng, colour)


def wall_texture(rng, height: int, width: int, colour) -> np.ndarray:
    blotches = smooth_noise(rng, height, width, 3, 4)
    grain = smooth_noise(rng, height, width, height // 3, width // 3)
    shade = 0.88 + 0.12 * blotches + 0.04 * grain
    return shade[..., None] * jitter(rng, colour)


def surface_texture(rng, height: int, width: int) -> np.ndarray:
    """A table top: wood, painted board or cloth."""
    kind = rng.random()
    if kind < 0.6:
        return wood_texture(rng, height, width, pick(rng, WOODS))
    if kind < 0.8:
        return wall_texture(rng, height, width, pick(rng, PAINTED))
    weave = 0.9 + 0.1 * smooth_noise(rng, height, width, height // 2, width // 2)
    return (weave * (0.9 + 0.1 * smooth_noise(rng, height, width, 2, 3)))[..., None] * jitter(rng, pick(rng, CLOTHS))
