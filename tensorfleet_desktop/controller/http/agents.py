"""(filled in by the issue-26 work)"""

from fastapi import APIRouter

router = APIRouter()
