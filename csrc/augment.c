/* augment.c - pixel kernels of the augmentation recipe: the bilinear
 * affine warp (flip + rotation + scale + crop in one pass, edge
 * replicate), colour jitter (brightness, contrast, saturation, YIQ hue),
 * clip and map to [-1, 1], and 8-bit packing of cached faces. Conventions
 * and formulas are in augment.h.
 */
#include "augment.h"

#include <math.h>
#include <stdio.h>

static const char *color_name(fid_color_kind k)
{
    switch (k) {
    case FID_COLOR_BRIGHTNESS: return "brightness";
    case FID_COLOR_CONTRAST: return "contrast";
    case FID_COLOR_SATURATION: return "saturation";
    case FID_COLOR_HUE: return "hue";
    }
    return "?";
}

/* ---- warp ----------------------------------------------------------------- */

void fid_warp_matrix(double m[6], const fid_warp *w, size_t src_h, size_t src_w, size_t out_h,
                     size_t out_w)
{
    (void)src_h;
    double c = cos(w->angle) / w->zoom, s = sin(w->angle) / w->zoom;
    /* output pixel u has du = u + 0.5 - OW/2; source index = coordinate - 0.5 */
    double du0 = 0.5 - (double)out_w / 2, dv0 = 0.5 - (double)out_h / 2;
    m[0] = c;
    m[1] = -s;
    m[2] = w->cx - 0.5 + (c * du0 - s * dv0);
    m[3] = s;
    m[4] = c;
    m[5] = w->cy - 0.5 + (s * du0 + c * dv0);
    if (w->flip) { /* x -> W - x in coordinates is x -> W - 1 - x in indices */
        m[0] = -m[0];
        m[1] = -m[1];
        m[2] = (double)src_w - 1 - m[2];
    }
}

static int check_source(const fid_aug_image *src, char *err)
{
    if ((!src->f) == (!src->u8)) {
        snprintf(err, FID_ERRMAX, "source image must be float or 8-bit");
        return FID_EARG;
    }
    if (src->channels != 1 && src->channels != 3) {
        snprintf(err, FID_ERRMAX, "source image has %d channels, expected 1 or 3", src->channels);
        return FID_EARG;
    }
    if (src->height == 0 || src->width == 0) {
        snprintf(err, FID_ERRMAX, "source image is empty");
        return FID_EARG;
    }
    return FID_OK;
}

static int check_out(const fid_tensor *out, int src_channels, char *err)
{
    char s[64];
    if (out->ndim != 3 || (out->size[0] != (size_t)src_channels && !(out->size[0] == 3 && src_channels == 1))) {
        fid_shape_str(s, sizeof s, out->ndim, out->size);
        snprintf(err, FID_ERRMAX, "output %s does not fit a %d-channel source (expected %dxHxW%s)", s,
                 src_channels, src_channels, src_channels == 1 ? " or 3xHxW" : "");
        return FID_EARG;
    }
    return FID_OK;
}

int fid_augment_warp(fid_tensor *out, const fid_aug_image *src, const fid_warp *w, char *err)
{
    int rc;
    if ((rc = check_source(src, err)) || (rc = check_out(out, src->channels, err))) return rc;
    if (!isfinite(w->angle) || !isfinite(w->cx) || !isfinite(w->cy) || !isfinite(w->zoom) || w->zoom <= 0) {
        snprintf(err, FID_ERRMAX, "warp needs finite angle, centre and a zoom > 0 (got angle %g, zoom %g, "
                 "centre %g,%g)", w->angle, w->zoom, w->cx, w->cy);
        return FID_EARG;
    }
    size_t H = src->height, W = src->width, OC = out->size[0], OH = out->size[1], OW = out->size[2];
    double m[6];
    fid_warp_matrix(m, w, H, W, OH, OW);
    float lut[256];
    for (int i = 0; i < 256; i++) lut[i] = (float)i / 255.0f;
    ptrdiff_t sc, sh, sw;
    if (src->u8) {
        sw = 1;
        sh = (ptrdiff_t)W;
        sc = (ptrdiff_t)(W * H);
    } else {
        sc = src->stride[0];
        sh = src->stride[1];
        sw = src->stride[2];
    }
    const double xmax = (double)(W - 1), ymax = (double)(H - 1);
    const ptrdiff_t cstep = src->channels == 1 ? 0 : sc;
    const ptrdiff_t oc = out->stride[0], ow = out->stride[2];
    for (size_t v = 0; v < OH; v++) {
        double bx = m[1] * (double)v + m[2], by = m[4] * (double)v + m[5];
        float *row = out->data + (ptrdiff_t)v * out->stride[1];
        for (size_t u = 0; u < OW; u++) {
            double x = m[0] * (double)u + bx, y = m[3] * (double)u + by;
            x = x < 0 ? 0 : x > xmax ? xmax : x;
            y = y < 0 ? 0 : y > ymax ? ymax : y;
            size_t x0 = (size_t)x, y0 = (size_t)y;
            float fx = (float)(x - (double)x0), fy = (float)(y - (double)y0);
            float w00 = (1 - fy) * (1 - fx), w01 = (1 - fy) * fx, w10 = fy * (1 - fx), w11 = fy * fx;
            ptrdiff_t dx = x0 + 1 < W ? sw : 0, dy = y0 + 1 < H ? sh : 0;
            ptrdiff_t o = (ptrdiff_t)y0 * sh + (ptrdiff_t)x0 * sw;
            float *dst = row + (ptrdiff_t)u * ow;
            if (src->u8) {
                const unsigned char *p = src->u8 + o;
                for (size_t c = 0; c < OC; c++, p += cstep)
                    dst[(ptrdiff_t)c * oc] = w00 * lut[p[0]] + w01 * lut[p[dx]] + w10 * lut[p[dy]] +
                                             w11 * lut[p[dy + dx]];
            } else {
                const float *p = src->f + o;
                for (size_t c = 0; c < OC; c++, p += cstep)
                    dst[(ptrdiff_t)c * oc] = w00 * p[0] + w01 * p[dx] + w10 * p[dy] + w11 * p[dy + dx];
            }
        }
    }
    return FID_OK;
}

/* ---- colour --------------------------------------------------------------- */

#define AT(t, c, y, x) \
    ((t)->data[(ptrdiff_t)(c) * (t)->stride[0] + (ptrdiff_t)(y) * (t)->stride[1] + (ptrdiff_t)(x) * (t)->stride[2]])

/* RGB -> YIQ (FCC NTSC); the I and Q rows sum to 0, so grey has no chroma */
static const double YIQ[3][3] = {
    {0.299, 0.587, 0.114},
    {0.595716, -0.274453, -0.321263},
    {0.211456, -0.522591, 0.311135},
};

static void inverse3(double r[3][3], const double a[3][3])
{
    double det = a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1]) -
                 a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0]) +
                 a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0]);
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            /* cofactor of a[j][i] */
            int r0 = (j + 1) % 3, r1 = (j + 2) % 3, c0 = (i + 1) % 3, c1 = (i + 2) % 3;
            r[i][j] = (a[r0][c0] * a[r1][c1] - a[r0][c1] * a[r1][c0]) / det;
        }
}

/* the RGB -> RGB matrix of a hue rotation by 2 pi h */
static void hue_matrix(float out[3][3], double h)
{
    double inv[3][3], rot[3][3], tmp[3][3];
    const double two_pi = 6.283185307179586476925286766559;
    double c = cos(two_pi * h), s = sin(two_pi * h);
    inverse3(inv, YIQ);
    for (int j = 0; j < 3; j++) {
        rot[0][j] = YIQ[0][j];
        rot[1][j] = c * YIQ[1][j] - s * YIQ[2][j];
        rot[2][j] = s * YIQ[1][j] + c * YIQ[2][j];
    }
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            tmp[i][j] = 0;
            for (int k = 0; k < 3; k++) tmp[i][j] += inv[i][k] * rot[k][j];
            out[i][j] = (float)tmp[i][j];
        }
}

int fid_color_apply(fid_tensor *img, const fid_color_op *op, char *err)
{
    char s[64];
    if (img->ndim != 3) {
        fid_shape_str(s, sizeof s, img->ndim, img->size);
        snprintf(err, FID_ERRMAX, "%s: expected a CxHxW image, got %s", color_name(op->kind), s);
        return FID_EARG;
    }
    size_t C = img->size[0], H = img->size[1], W = img->size[2];
    float a = op->amount;
    if (!isfinite(a)) {
        snprintf(err, FID_ERRMAX, "%s: amount must be finite", color_name(op->kind));
        return FID_EARG;
    }
    if ((op->kind == FID_COLOR_SATURATION || op->kind == FID_COLOR_HUE) && C != 3) {
        fid_shape_str(s, sizeof s, img->ndim, img->size);
        snprintf(err, FID_ERRMAX, "%s: needs a 3xHxW image, got %s", color_name(op->kind), s);
        return FID_EARG;
    }
    switch (op->kind) {
    case FID_COLOR_BRIGHTNESS:
        for (size_t c = 0; c < C; c++)
            for (size_t y = 0; y < H; y++)
                for (size_t x = 0; x < W; x++) AT(img, c, y, x) += a;
        break;
    case FID_COLOR_CONTRAST:
        for (size_t c = 0; c < C; c++) {
            double sum = 0;
            for (size_t y = 0; y < H; y++)
                for (size_t x = 0; x < W; x++) sum += AT(img, c, y, x);
            float mean = (float)(sum / ((double)H * (double)W));
            for (size_t y = 0; y < H; y++)
                for (size_t x = 0; x < W; x++) AT(img, c, y, x) = (AT(img, c, y, x) - mean) * a + mean;
        }
        break;
    case FID_COLOR_SATURATION:
        for (size_t y = 0; y < H; y++)
            for (size_t x = 0; x < W; x++) {
                float r = AT(img, 0, y, x), g = AT(img, 1, y, x), b = AT(img, 2, y, x);
                float grey = 0.299f * r + 0.587f * g + 0.114f * b;
                AT(img, 0, y, x) = grey + (r - grey) * a;
                AT(img, 1, y, x) = grey + (g - grey) * a;
                AT(img, 2, y, x) = grey + (b - grey) * a;
            }
        break;
    case FID_COLOR_HUE: {
        float m[3][3];
        hue_matrix(m, a);
        for (size_t y = 0; y < H; y++)
            for (size_t x = 0; x < W; x++) {
                float r = AT(img, 0, y, x), g = AT(img, 1, y, x), b = AT(img, 2, y, x);
                for (int i = 0; i < 3; i++) AT(img, i, y, x) = m[i][0] * r + m[i][1] * g + m[i][2] * b;
            }
        break;
    }
    default:
        snprintf(err, FID_ERRMAX, "unknown colour op %d", (int)op->kind);
        return FID_EARG;
    }
    return FID_OK;
}

/* ---- the recipe ------------------------------------------------------------ */

/* centre of a window of `win` source pixels on an axis of `len` pixels */
static double place(double t, double len, double win, int snap)
{
    double slack = len - win;
    double left = slack <= 0 ? slack / 2 : t * slack;
    if (snap) left = floor(left);
    return left + win / 2;
}

void fid_aug_params_warp(fid_warp *w, const fid_aug_params *p, size_t src_h, size_t src_w,
                         size_t out_h, size_t out_w)
{
    double side = (double)(src_h < src_w ? src_h : src_w);
    w->flip = p->flip;
    w->angle = p->angle;
    w->zoom = p->scale * p->resize / side;
    w->cx = place(p->tx, (double)src_w, (double)out_w / w->zoom, p->snap);
    w->cy = place(p->ty, (double)src_h, (double)out_h / w->zoom, p->snap);
}

static int check_params(const fid_aug_params *p, size_t out_c, char *err)
{
    if (!isfinite(p->angle) || !isfinite(p->scale) || p->scale <= 0 || !isfinite(p->resize) || p->resize <= 0) {
        snprintf(err, FID_ERRMAX, "augment needs a finite angle and scale, resize > 0 (got angle %g, "
                 "scale %g, resize %g)", p->angle, p->scale, p->resize);
        return FID_EARG;
    }
    if (!(p->tx >= 0 && p->tx <= 1 && p->ty >= 0 && p->ty <= 1)) {
        snprintf(err, FID_ERRMAX, "augment: tx and ty must be in [0, 1], got %g and %g", p->tx, p->ty);
        return FID_EARG;
    }
    if (p->ncolor < 0 || p->ncolor > FID_AUG_MAXCOLOR) {
        snprintf(err, FID_ERRMAX, "augment: %d colour ops, at most %d", p->ncolor, FID_AUG_MAXCOLOR);
        return FID_EARG;
    }
    for (int i = 0; i < p->ncolor; i++) {
        const fid_color_op *op = &p->color[i];
        if (op->kind != FID_COLOR_BRIGHTNESS && op->kind != FID_COLOR_CONTRAST &&
            op->kind != FID_COLOR_SATURATION && op->kind != FID_COLOR_HUE) {
            snprintf(err, FID_ERRMAX, "augment: unknown colour op %d", (int)op->kind);
            return FID_EARG;
        }
        if (!isfinite(op->amount)) {
            snprintf(err, FID_ERRMAX, "augment: %s amount must be finite", color_name(op->kind));
            return FID_EARG;
        }
        if ((op->kind == FID_COLOR_SATURATION || op->kind == FID_COLOR_HUE) && out_c != 3) {
            snprintf(err, FID_ERRMAX, "augment: %s needs a 3-channel output, got %zu", color_name(op->kind),
                     out_c);
            return FID_EARG;
        }
    }
    return FID_OK;
}

int fid_augment_image(fid_tensor *out, const fid_aug_image *src, const fid_aug_params *p, char *err)
{
    int rc;
    if ((rc = check_source(src, err)) || (rc = check_out(out, src->channels, err)) ||
        (rc = check_params(p, out->size[0], err)))
        return rc;
    fid_warp w;
    fid_aug_params_warp(&w, p, src->height, src->width, out->size[1], out->size[2]);
    if ((rc = fid_augment_warp(out, src, &w, err))) return rc;
    for (int i = 0; i < p->ncolor; i++)
        if ((rc = fid_color_apply(out, &p->color[i], err))) return rc;
    if (p->clip || p->normalize) {
        size_t C = out->size[0], H = out->size[1], W = out->size[2];
        for (size_t c = 0; c < C; c++)
            for (size_t y = 0; y < H; y++)
                for (size_t x = 0; x < W; x++) {
                    float v = AT(out, c, y, x);
                    if (p->clip) v = v < 0 ? 0 : v > 1 ? 1 : v;
                    if (p->normalize) v = v * 2 - 1;
                    AT(out, c, y, x) = v;
                }
    }
    return FID_OK;
}

/* ---- 8-bit packing --------------------------------------------------------- */

void fid_augment_pack(unsigned char *dst, const fid_tensor *img)
{
    size_t C = img->size[0], H = img->size[1], W = img->size[2], k = 0;
    for (size_t c = 0; c < C; c++)
        for (size_t y = 0; y < H; y++)
            for (size_t x = 0; x < W; x++) {
                float v = AT(img, c, y, x);
                v = v > 0 ? (v < 1 ? v : 1) : 0; /* NaN fails v > 0: 0 */
                dst[k++] = (unsigned char)(v * 255.0f + 0.5f);
            }
}

int fid_augment_is_grey(const fid_tensor *img)
{
    if (img->ndim != 3 || img->size[0] != 3) return 0;
    for (size_t y = 0; y < img->size[1]; y++)
        for (size_t x = 0; x < img->size[2]; x++) {
            float r = AT(img, 0, y, x);
            if (AT(img, 1, y, x) != r || AT(img, 2, y, x) != r) return 0;
        }
    return 1;
}
