"""Job bundles: workspace archives fetched once into a content-addressed cache, then unpacked safely.

``BundleCache.fetch`` downloads (http, https) or copies (file) an archive and keeps it by sha256;
``unpack`` writes a .tar.gz, .tar or .zip into a job's empty working directory, refusing anything that
could reach outside it; ``read_member`` reads one file of an archive without unpacking it. Every failure is a
``hatchway.errors.BadBundle``.
"""

from __future__ import annotations

from hatchway.bundles.archive import UnpackedBundle, read_member, unpack
from hatchway.bundles.cache import BundleCache, FetchedBundle

__all__ = ["BundleCache", "FetchedBundle", "UnpackedBundle", "read_member", "unpack"]
