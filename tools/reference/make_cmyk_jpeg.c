/* Writes a four-channel JPEG (CMYK or YCCK colour transform) from raw CMYK bytes, for the JPEG
 * decoding fixtures: Pillow writes only plain (Adobe-inverted) CMYK, cjpeg none at all.
 * Build: gcc -O2 -o make_cmyk_jpeg make_cmyk_jpeg.c -ljpeg
 * Usage: make_cmyk_jpeg IN.cmyk WIDTH HEIGHT cmyk|ycck QUALITY OUT.jpg */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h>

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: %s IN.cmyk W H cmyk|ycck QUALITY OUT.jpg\n", argv[0]);
        return 2;
    }
    int w = atoi(argv[2]), h = atoi(argv[3]), q = atoi(argv[5]);
    size_t n = (size_t)w * h * 4;
    unsigned char *px = malloc(n);
    FILE *in = fopen(argv[1], "rb");
    if (!in || fread(px, 1, n, in) != n) {
        fprintf(stderr, "cannot read %zu bytes from %s\n", n, argv[1]);
        return 1;
    }
    fclose(in);
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr err;
    c.err = jpeg_std_error(&err);
    jpeg_create_compress(&c);
    FILE *out = fopen(argv[6], "wb");
    jpeg_stdio_dest(&c, out);
    c.image_width = w;
    c.image_height = h;
    c.input_components = 4;
    c.in_color_space = JCS_CMYK;
    jpeg_set_defaults(&c);
    jpeg_set_colorspace(&c, strcmp(argv[4], "ycck") == 0 ? JCS_YCCK : JCS_CMYK);
    jpeg_set_quality(&c, q, TRUE);
    jpeg_start_compress(&c, TRUE);
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = px + (size_t)c.next_scanline * w * 4;
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    fclose(out);
    jpeg_destroy_compress(&c);
    free(px);
    return 0;
}
