/* UTF-8 and URL checks of the row work (part of _fastbuild.c, included by _fastbuild_rows.h) */

/* strict UTF-8 (what Python's decoder accepts): returns the code point count or -1 */
static Py_ssize_t utf8_decode(const uint8_t *s, size_t n, uint32_t *cps, uint32_t *boff) {
    size_t i = 0;
    Py_ssize_t k = 0;
    while (i < n) {
        uint8_t b = s[i];
        uint32_t cp;
        int extra;
        if (b < 0x80) { cp = b; extra = 0; }
        else if (b >= 0xC2 && b <= 0xDF) { cp = b & 0x1F; extra = 1; }
        else if (b >= 0xE0 && b <= 0xEF) { cp = b & 0x0F; extra = 2; }
        else if (b >= 0xF0 && b <= 0xF4) { cp = b & 0x07; extra = 3; }
        else return -1;
        if (extra && i + extra >= n) return -1;  /* truncated */
        for (int j = 1; j <= extra; j++) {
            uint8_t c = s[i + j];
            if ((c & 0xC0) != 0x80) return -1;
            cp = cp << 6 | (c & 0x3F);
        }
        if ((extra == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (extra == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
            return -1;
        if (cps) { cps[k] = cp; boff[k] = (uint32_t)i; }
        k++;
        i += extra + 1;
    }
    if (boff) boff[k] = (uint32_t)n;
    return k;
}

/* fast_ids.NORMAL_FORM / _ENCODED: https, lower-case host, a path of characters quote() keeps */
static uint8_t URL_CHARS[256];  /* 1: path character quote() keeps, 2: host character */

static void init_url_chars(void) {
    for (int c = 0; c < 256; c++) {
        int path = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                   (c && strchr("/:@!$&'()*+,;=-._~", c));
        int host = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-';
        URL_CHARS[c] = (uint8_t)(path | host << 1);
    }
}

static int hexval(uint8_t c) { return c >= '0' && c <= '9' ? c - '0' : (c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1); }

/* 1 when the URL is its own normal form (fast_ids.normal_url's two fast paths) */
static int url_is_normal(const uint8_t *u, size_t n) {
    if (n < 9 || memcmp(u, "https://", 8) != 0) return 0;
    size_t i = 8;
    while (i < n && (URL_CHARS[u[i]] & 2)) i++;
    if (i == 8 || i >= n || u[i] != '/') return 0;
    int escapes = 0;
    for (; i < n; i++) {
        if (URL_CHARS[u[i]] & 1) continue;
        if (u[i] == '%' && i + 2 < n && u[i + 1] && strchr("89ABCDEF", u[i + 1]) && hexval(u[i + 2]) >= 0) {
            escapes = 1;
            i += 2;
            continue;
        }
        return 0;
    }
    if (!escapes) return 1;
    /* unquote_to_bytes(url).decode("utf-8") must succeed */
    uint8_t *bytes = malloc(n);
    if (!bytes) return 0;
    size_t m = 0;
    for (i = 0; i < n; i++) {
        if (u[i] == '%') { bytes[m++] = (uint8_t)(hexval(u[i + 1]) << 4 | hexval(u[i + 2])); i += 2; }
        else bytes[m++] = u[i];
    }
    int ok = utf8_decode(bytes, m, NULL, NULL) >= 0;
    free(bytes);
    return ok;
}

