#!/usr/bin/python3
"""Writes the image fixtures of tests/image_test.cpp into OUTDIR.

Each fixture NAME comes with NAME.ref: the pixels facevec must decode, as
an ASCII "width height\n" line followed by width * height * 3 bytes of
RGB. References come from Pillow's decoders or from numpy applying the
documented conversions (embed/image.h), never from facevec itself.
Run: image_fixtures.py OUTDIR
"""
import io
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
from PIL import Image, ImageOps

SEED = 20261204
WIDTH, HEIGHT = 37, 23


def pattern(width=WIDTH, height=HEIGHT, seed=SEED):
    """Smooth gradients plus noise: exercises both filters and codecs."""
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // max(width - 1, 1),
                    y * 255 // max(height - 1, 1),
                    (x + y) * 255 // max(width + height - 2, 1)], axis=-1)
    noise = rng.randint(-40, 41, size=rgb.shape)
    return np.clip(rgb + noise, 0, 255).astype(np.uint8)


def write_ref(out, name, rgb):
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w, _ = rgb.shape
    with open(os.path.join(out, name + '.ref'), 'wb') as f:
        f.write(b'%d %d\n' % (w, h))
        f.write(rgb.tobytes())


def pil_ref(out, name):
    with Image.open(os.path.join(out, name)) as im:
        write_ref(out, name, np.asarray(im.convert('RGB')))


def to8(values, max_value):
    values = values.astype(np.int64)
    return ((values * 255 + max_value // 2) // max_value).astype(np.uint8)


def over_white(rgb8, alpha8):
    rgb = rgb8.astype(np.int64)
    a = alpha8.astype(np.int64)[..., None]
    return ((rgb * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)


def png_chunk(kind, data):
    body = kind + data
    return (struct.pack('>I', len(data)) + body +
            struct.pack('>I', zlib.crc32(body) & 0xffffffff))


def write_png(path, width, height, bit_depth, colour_type, rows,
              extra=b''):
    """A PNG written by hand: `rows` are the packed scanlines."""
    ihdr = struct.pack('>IIBBBBB', width, height, bit_depth, colour_type,
                       0, 0, 0)
    raw = b''.join(b'\x00' + r for r in rows)
    with open(path, 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n' + png_chunk(b'IHDR', ihdr) + extra +
                png_chunk(b'IDAT', zlib.compress(raw, 9)) +
                png_chunk(b'IEND', b''))


def samples16(arr):
    return [row.astype('>u2').tobytes() for row in arr.reshape(
        arr.shape[0], -1)]


def make_jpegs(out):
    rgb = Image.fromarray(pattern())
    rgb.save(os.path.join(out, 'baseline.jpg'), quality=90)
    rgb.save(os.path.join(out, 'progressive.jpg'), quality=90,
             progressive=True)
    rgb.save(os.path.join(out, 'subsampling444.jpg'), quality=90,
             subsampling=0)
    rgb.convert('L').save(os.path.join(out, 'gray.jpg'), quality=90)
    rgb.convert('CMYK').save(os.path.join(out, 'cmyk_pil.jpg'), quality=95)
    for name in ('baseline.jpg', 'progressive.jpg', 'subsampling444.jpg',
                 'gray.jpg', 'cmyk_pil.jpg'):
        pil_ref(out, name)

    # ImageMagick's CMYK JPEG (Adobe marker, inverted samples); the
    # reference is the sRGB source it was made from.
    big = Image.fromarray(pattern(64, 48)).resize((64, 48))
    big.save(os.path.join(out, 'cmyk_source.png'))
    subprocess.run(['convert', os.path.join(out, 'cmyk_source.png'),
                    '-colorspace', 'CMYK', '-quality', '98',
                    os.path.join(out, 'cmyk_im.jpg')], check=True)
    write_ref(out, 'cmyk_im.jpg', np.asarray(big))

    # EXIF orientation 1..8, in JPEG APP1 and in PNG eXIf.
    wide = Image.fromarray(pattern(40, 24, SEED + 1))
    for o in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = o
        for ext in ('jpg', 'png'):
            name = 'exif%d.%s' % (o, ext)
            path = os.path.join(out, name)
            if ext == 'jpg':
                wide.save(path, quality=92, exif=exif.tobytes())
            else:
                wide.save(path, exif=exif.tobytes())
            with Image.open(path) as im:
                write_ref(out, name,
                          np.asarray(ImageOps.exif_transpose(im)
                                     .convert('RGB')))


def make_pngs(out):
    rgb = pattern()
    rng = np.random.RandomState(SEED + 2)
    h, w = rgb.shape[:2]

    Image.fromarray(rgb).save(os.path.join(out, 'rgb8.png'))
    write_ref(out, 'rgb8.png', rgb)
    gray = rgb[..., 1]
    Image.fromarray(gray).save(os.path.join(out, 'gray8.png'))
    write_ref(out, 'gray8.png', np.repeat(gray[..., None], 3, axis=2))

    alpha = rng.randint(0, 256, size=(h, w)).astype(np.uint8)
    alpha[0, :] = 0
    alpha[1, :] = 255
    rgba = np.dstack([rgb, alpha])
    Image.fromarray(rgba, 'RGBA').save(os.path.join(out, 'rgba8.png'))
    write_ref(out, 'rgba8.png', over_white(rgb, alpha))
    la = np.dstack([gray, alpha])
    Image.fromarray(la, 'LA').save(os.path.join(out, 'gray_alpha8.png'))
    write_ref(out, 'gray_alpha8.png',
              over_white(np.repeat(gray[..., None], 3, axis=2), alpha))

    # Same look, different colours under the transparent pixels.
    for i, hidden in enumerate((0, 200)):
        varied = rgba.copy()
        varied[alpha == 0, :3] = hidden
        Image.fromarray(varied, 'RGBA').save(
            os.path.join(out, 'hidden%d.png' % i))

    # Palette with per-entry transparency (tRNS).
    palette = rng.randint(0, 256, size=(16, 3)).astype(np.uint8)
    trns = rng.randint(0, 256, size=16).astype(np.uint8)
    trns[0] = 0
    index = rng.randint(0, 16, size=(h, w)).astype(np.uint8)
    rows = [r.tobytes() for r in index]
    write_png(os.path.join(out, 'palette_trns.png'), w, h, 8, 3, rows,
              png_chunk(b'PLTE', palette.tobytes()) +
              png_chunk(b'tRNS', trns.tobytes()))
    write_ref(out, 'palette_trns.png',
              over_white(palette[index], trns[index]))

    # Every 16-bit value once: 256 x 256 gray.
    ramp = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    write_png(os.path.join(out, 'gray16.png'), 256, 256, 16, 0,
              samples16(ramp))
    write_ref(out, 'gray16.png',
              np.repeat(to8(ramp, 65535)[..., None], 3, axis=2))

    rgb16 = rng.randint(0, 65536, size=(h, w, 3)).astype(np.uint16)
    write_png(os.path.join(out, 'rgb16.png'), w, h, 16, 2, samples16(rgb16))
    write_ref(out, 'rgb16.png', to8(rgb16, 65535))
    a16 = rng.randint(0, 65536, size=(h, w)).astype(np.uint16)
    a16[0, :] = 0
    rgba16 = np.dstack([rgb16, a16])
    write_png(os.path.join(out, 'rgba16.png'), w, h, 16, 6,
              samples16(rgba16))
    write_ref(out, 'rgba16.png', over_white(to8(rgb16, 65535),
                                            to8(a16, 65535)))

    # Gray at 1, 2 and 4 bits.
    for bits in (1, 2, 4):
        top = (1 << bits) - 1
        g = rng.randint(0, top + 1, size=(h, w)).astype(np.uint8)
        rows = []
        for r in g:
            bitstr = ''.join(format(v, '0%db' % bits) for v in r)
            bitstr += '0' * (-len(bitstr) % 8)
            rows.append(int(bitstr, 2).to_bytes(len(bitstr) // 8, 'big'))
        name = 'gray%dbit.png' % bits
        write_png(os.path.join(out, name), w, h, bits, 0, rows)
        write_ref(out, name, np.repeat(to8(g, top)[..., None], 3, axis=2))

    subprocess.run(['convert', os.path.join(out, 'rgb8.png'), '-interlace',
                    'PNG', os.path.join(out, 'interlaced.png')], check=True)
    pil_ref(out, 'interlaced.png')

    # Header only, over the size limits (valid CRCs).
    for name, (hw, hh) in (('huge_side.png', (20000, 100)),
                           ('huge_pixels.png', (10000, 10000))):
        write_png(os.path.join(out, name), hw, hh, 8, 2, [])


def write_pnm(path, magic, width, height, max_value, samples):
    header = b'%s\n# made by image_fixtures.py\n%d %d\n%d\n' % (
        magic, width, height, max_value)
    dtype = '>u2' if max_value > 255 else 'u1'
    with open(path, 'wb') as f:
        f.write(header + samples.astype(dtype).tobytes())


def make_pnms(out):
    rng = np.random.RandomState(SEED + 3)
    h, w = HEIGHT, WIDTH
    for name, magic, channels, top in (('gray8.pgm', b'P5', 1, 255),
                                       ('gray16.pgm', b'P5', 1, 65535),
                                       ('gray15.pgm', b'P5', 1, 15),
                                       ('rgb8.ppm', b'P6', 3, 255),
                                       ('rgb16.ppm', b'P6', 3, 65535),
                                       ('rgb1000.ppm', b'P6', 3, 1000)):
        s = rng.randint(0, top + 1, size=(h, w, channels))
        write_pnm(os.path.join(out, name), magic, w, h, top, s)
        ref = to8(s, top)
        if channels == 1:
            ref = np.repeat(ref, 3, axis=2)
        write_ref(out, name, ref)


def make_resize_refs(out):
    src = Image.fromarray(pattern())
    src.save(os.path.join(out, 'resize_source.png'))
    for name, box, size in (('down', None, (15, 9)),
                            ('up', None, (50, 40)),
                            ('mixed', None, (60, 11)),
                            ('crop', (5, 3, 25, 18), (11, 8))):
        im = src.crop(box) if box else src
        write_ref(out, 'resize_' + name,
                  np.asarray(im.resize(size, Image.BILINEAR)))


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    make_jpegs(out)
    make_pngs(out)
    make_pnms(out)
    make_resize_refs(out)


if __name__ == '__main__':
    main()
