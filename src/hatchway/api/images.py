"""/images: what hatchway manages, and importing a root filesystem on hosts without a registry."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request

from hatchway.api.deps import ImagesDep, SettingsDep
from hatchway.api.schemas import ImageInfo
from hatchway.errors import InvalidRequest

router = APIRouter(prefix="/images", tags=["images"])

# A Docker reference: [host[:port]/]path[:tag], lower-case path components.
_REFERENCE = re.compile(
    r"^(?:[a-zA-Z0-9.-]+(?::\d+)?/)?[a-z0-9]+(?:[._/-][a-z0-9]+)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$"
)
_CHUNK = 1024 * 1024


@router.get("", response_model=list[ImageInfo])
async def list_images(images: ImagesDep) -> list[ImageInfo]:
    """Images hatchway built, pulled or imported: size, last use, and how many jobs use them now."""
    return [ImageInfo(**vars(image)) for image in await images.managed()]


@router.post("/import", response_model=ImageInfo, status_code=201)
async def import_image(
    request: Request,
    images: ImagesDep,
    settings: SettingsDep,
    name: Annotated[str, Query(description="The image name to create, e.g. tools/python:3.11")],
) -> ImageInfo:
    """Create an image from a root filesystem tar sent as the request body (application/x-tar)."""
    if not _REFERENCE.match(name):
        raise InvalidRequest(f"{name!r} is not a valid image name (e.g. tools/python:3.11)")
    scratch = settings.data_dir / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=scratch, suffix=".tar") as upload:
        async for chunk in request.stream():
            upload.write(chunk)
        upload.flush()
        imported = await images.import_rootfs(name, Path(upload.name))
    return ImageInfo(**vars(imported))
