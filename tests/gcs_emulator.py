"""Starts gcp-storage-emulator (PyPI), the one GCS server that runs here, with some of its
answers brought in line with the real service, so that clients are tested against what
GCS does rather than against the emulator's slips:

- a status query of a resumable upload that holds no bytes yet gets 308 *without* a
  Range header (the emulator says ``bytes=0-0``, which claims one byte);
- an object uploaded without a Content-Type gets ``application/octet-stream`` (the
  emulator stores null, which OpenDAL's GCS client refuses to parse);
- an empty object can be uploaded (the emulator fails on the missing body);
- a resumable upload that completed answers a status query (or another chunk) with 200
  and the object, as GCS does for a week (the emulator forgets it: 404);
- a chunk of a resumable upload that does not end it (``bytes a-b/*``) must be a
  multiple of 256 KiB, or it is refused with 400 (the emulator takes any length);
- an upload with ``ifGenerationMatch=0`` (create-only: repository config and locks) is
  refused with 412 when the object exists, at the start of the upload and again when it
  completes (the emulator ignores the condition). The emulator serves one request at a
  time, so a check and its write cannot interleave.

Usage, as the emulator's own CLI: ``python gcs_emulator.py start --host=127.0.0.1
--port=N`` with ``STORAGE_BASE`` naming the data directory.
"""

import sys
import urllib.parse
from http import HTTPStatus

from gcp_storage_emulator import __main__ as cli
from gcp_storage_emulator.exceptions import BadRequest, NotFound
from gcp_storage_emulator.handlers import objects
from gcp_storage_emulator.storage import Storage

_content_type = objects._content_type_from_request
_media_upload = objects._media_upload
_create_resumable = objects._create_resumable_upload
_finalize = objects._finalize_resumable_object
_chunk = objects._handle_resumable_chunk
_status = objects._handle_resumable_status
_session_obj = Storage.get_resumable_file_obj
#: completed resumable uploads: upload id -> (bucket, object name)
_completed: dict[str, tuple[str, str]] = {}
#: upload ids of resumable uploads started with ifGenerationMatch=0
_create_only: set[str] = set()


def _resumable_incomplete(response, storage, upload_id, fallback_end=0):  # noqa: ARG001
    response.status = objects.GoogleHTTPStatus.RESUME_INCOMPLETE
    held = storage.get_resumable_byte_count(upload_id)
    if held > 0:
        response["Range"] = f"bytes=0-{held - 1}"


def _content_type_from_request(request, default=None):
    return _content_type(request, default) or "application/octet-stream"


def _exists(storage, bucket, name) -> bool:
    try:
        storage.get_file_obj(bucket, name)
    except NotFound:
        return False
    return True


def _refuse(response) -> None:
    response.status = HTTPStatus.PRECONDITION_FAILED
    response.json({"error": {"code": 412, "message": "At least one of the pre-conditions "
                             "you specified did not hold."}})


def _create_only_exists(request, storage) -> bool:
    name = (request.query.get("name") or [None])[0]
    if name is None and isinstance(request.data, dict):
        name = request.data.get("name")
    return (request.query.get("ifGenerationMatch") == ["0"] and name is not None
            and _exists(storage, request.params["bucket_name"], name))


def _media_upload_as_gcs(request, response, storage):
    if _create_only_exists(request, storage):
        return _refuse(response)
    if request.data is None:
        request._data = b""
    return _media_upload(request, response, storage)


def _create_resumable_as_gcs(request, response, storage):
    if "upload_id" not in request.query and _create_only_exists(request, storage):
        return _refuse(response)
    result = _create_resumable(request, response, storage)
    if request.query.get("ifGenerationMatch") == ["0"]:
        location = response._headers.get("Location", "")
        _create_only.update(urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)
                            .get("upload_id", []))
    return result


def _finalize_as_gcs(response, storage, obj, data, upload_id):
    if upload_id in _create_only and _exists(storage, obj["bucket"], obj["name"]):
        return _refuse(response)
    _create_only.discard(upload_id)
    _completed[upload_id] = (obj["bucket"], obj["name"])
    return _finalize(response, storage, obj, data, upload_id)


def _session_obj_as_gcs(storage, upload_id):
    try:
        return _session_obj(storage, upload_id)
    except NotFound:
        if upload_id not in _completed:
            raise
        bucket, name = _completed[upload_id]
        return {"bucket": bucket, "name": name, "completed": True}


def _answer_completed(response, storage, upload_id) -> bool:
    if upload_id not in _completed:
        return False
    response.json(storage.get_file_obj(*_completed[upload_id]))
    return True


def _status_as_gcs(response, storage, upload_id, obj, total):
    if obj.get("completed") and _answer_completed(response, storage, upload_id):
        return None
    return _status(response, storage, upload_id, obj, total)


def _chunk_as_gcs(response, storage, upload_id, chunk, parsed):
    if _answer_completed(response, storage, upload_id):
        return None
    if parsed["total"] is None and len(chunk or b"") % (256 << 10):
        raise BadRequest("Invalid request. The number of bytes uploaded is required to be "
                         "equal or greater than 262144, except for the final request (it's "
                         "recommended to be the exact multiple of 262144).")
    return _chunk(response, storage, upload_id, chunk, parsed)


objects._resumable_incomplete = _resumable_incomplete
objects._handle_resumable_chunk = _chunk_as_gcs
objects._handle_resumable_status = _status_as_gcs
Storage.get_resumable_file_obj = _session_obj_as_gcs
objects._media_upload = _media_upload_as_gcs
objects._create_resumable_upload = _create_resumable_as_gcs
objects._finalize_resumable_object = _finalize_as_gcs
objects._content_type_from_request = _content_type_from_request

if __name__ == "__main__":
    sys.exit(cli.main())
