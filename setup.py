"""The compiled parts: build/_fastbuild.c (the MMIR shard rows in C), io/_fasttsv.c (TSV
segments to Arrow buffers) and io/_fasttrec.c (TREC run lines to Arrow buffers). Metadata lives
in pyproject.toml.

All are optional: where they cannot be compiled, `build mmir` runs its pure-Python path and
the TSV and TREC readers pyarrow.csv alone (same outputs, slower), so a failed compile warns
instead of failing the install.
"""

import os

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    def run(self):
        try:
            super().run()
        except Exception as exc:  # no compiler: the pure-Python path still works
            print(f"warning: extensions not compiled ({exc}); build mmir uses Python")

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            print(f"warning: {ext.name} not compiled ({exc}); its Python path runs")


# OpenSSL's SHA-256 where its headers are (Debian: libssl-dev), else the portable one in the file
OPENSSL = os.path.exists("/usr/include/openssl/sha.h") and not os.environ.get("WIT_RETRIEVAL_NO_OPENSSL")

setup(
    ext_modules=[Extension("wit_retrieval.build._fastbuild", ["wit_retrieval/build/_fastbuild.c"],
                           depends=[f"wit_retrieval/build/_fastbuild_{part}.h" for part in ("batch", "keys", "rows", "sha", "text", "trie")],
                           define_macros=[("HAVE_OPENSSL", "1"), ("OPENSSL_API_COMPAT", "0x10100000L")] if OPENSSL else [],
                           libraries=["crypto"] if OPENSSL else [],
                           extra_compile_args=["-O2", "-std=c11", "-Wall"]),
                 Extension("wit_retrieval.io._fasttsv", ["wit_retrieval/io/_fasttsv.c"],
                           extra_compile_args=["-O2", "-std=c11", "-Wall"]),
                 Extension("wit_retrieval.io._fasttrec", ["wit_retrieval/io/_fasttrec.c"],
                           extra_compile_args=["-O2", "-std=c11", "-Wall"])],
    cmdclass={"build_ext": OptionalBuildExt},
)
