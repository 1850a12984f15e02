/* draw.h - an RGB raster canvas for charts and picture grids (csrc/draw.c):
 * filled and outlined rectangles, thick lines, a built-in bitmap font and
 * tensor images, saved through fid_image_save (csrc/image.c).
 *
 * Pixels are 8-bit RGB, interleaved, rows top to bottom: (height, width, 3).
 * Coordinates are 0-based pixels, x to the right, y down. Every drawing call
 * is clipped to the canvas and to an optional clip rectangle, so any
 * position is safe; positions are 64-bit and the bindings keep them within
 * +-FID_CANVAS_MAX_COORD so that sums of two never overflow.
 *
 * The font: printable ASCII 32..126, each glyph 5x7 pixels with two rows of
 * descender, in a FID_FONT_W x FID_FONT_H cell (one blank column on the
 * right, one blank row on top). Other bytes draw as '?'. A scale s draws
 * every font pixel as an s x s square.
 */
#ifndef FACEID_DRAW_H
#define FACEID_DRAW_H

#include "faceid.h"

#define FID_CANVAS_MAX_SIDE 8192
#define FID_CANVAS_MAX_COORD 1e15 /* |x|, |y|, |w|, |h| as given by the bindings */
#define FID_FONT_W 6
#define FID_FONT_H 10
#define FID_FONT_MAX_SCALE 64

typedef struct fid_rgb {
    unsigned char r, g, b;
} fid_rgb;

typedef struct fid_canvas {
    unsigned char *px;          /* (height, width, 3); NULL once freed */
    int width, height;
    long long cx0, cy0, cx1, cy1; /* clip window [cx0, cx1) x [cy0, cy1), inside the canvas */
} fid_canvas;

/* allocate a width x height canvas (1..FID_CANVAS_MAX_SIDE each) filled with
   bg, unclipped; FID_EARG for a bad size, FID_ENOMEM */
int fid_canvas_init(fid_canvas *c, long long width, long long height, fid_rgb bg, char *err);
void fid_canvas_free(fid_canvas *c);
/* restrict drawing to [x, x + w) x [y, y + h) within the canvas (possibly
   empty); fid_canvas_unclip restores the whole canvas */
void fid_canvas_clip(fid_canvas *c, long long x, long long y, long long w, long long h);
void fid_canvas_unclip(fid_canvas *c);

/* the w x h rectangle at (x, y): filled, or its 1-pixel outline; nothing
   when w or h <= 0 */
void fid_canvas_rect(fid_canvas *c, long long x, long long y, long long w, long long h, fid_rgb col,
                     int filled);
/* a line between the pixels nearest to (x0, y0) and (x1, y1), both ends
   included, stepping one pixel along the longer axis (DDA); each step
   paints a thickness x thickness square (1..FID_FONT_MAX_SCALE). Only the
   steps near the clip window are visited, so long lines cost little. */
void fid_canvas_line(fid_canvas *c, double x0, double y0, double x1, double y1, fid_rgb col,
                     int thickness);

/* width in pixels of len characters at scale (FID_FONT_W * scale each) */
long long fid_text_width(size_t len, int scale);
/* draw s[0..len) with the top-left corner of its first cell at (x, y);
   vertical: turned a quarter counter-clockwise, reading upwards, in the box
   FID_FONT_H * scale wide and fid_text_width tall whose top-left is (x, y).
   Returns fid_text_width(len, scale). */
long long fid_canvas_text(fid_canvas *c, long long x, long long y, const char *s, size_t len,
                          fid_rgb col, int scale, int vertical);

/* paint img (C, H, W), C = 1 (grey, repeated to R, G, B) or 3, any
   strides, into the w x h box at (x, y) by nearest neighbour (w = W and
   h = H copy pixel for pixel). A value v becomes
   round(255 * (v - lo) / (hi - lo)) clamped to 0..255; NaN becomes 0.
   FID_EARG for a bad shape, lo == hi, non-finite lo or hi, or w, h < 1. */
int fid_canvas_blit(fid_canvas *c, const fid_tensor *img, long long x, long long y, long long w,
                    long long h, double lo, double hi, char *err);

/* out (3, height, width), contiguous: the pixels / 255 */
void fid_canvas_to_tensor(const fid_canvas *c, fid_tensor *out);
/* write the canvas with fid_image_save (fmt an fid_image_format: PNG, JPEG
   at quality 95, BMP): atomically, through a temporary file and rename.
   FID_EIO with a message when the file cannot be written. */
int fid_canvas_save(const fid_canvas *c, const char *path, int fmt, char *err);

#endif
