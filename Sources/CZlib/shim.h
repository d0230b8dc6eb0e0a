// zlib (Debian's zlib1g, headers from zlib1g-dev): the gzip container of TLS-RPT reports
// (RFC 8460 §5.1, application/tlsrpt+gzip).
#include <zlib.h>

// deflateInit2 is a macro, which Swift cannot call: windowBits 15 + 16 asks for a gzip header
// and trailer rather than zlib's own.
static inline int tern_deflate_init_gzip(z_stream *stream, int level) {
    return deflateInit2(stream, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
}
