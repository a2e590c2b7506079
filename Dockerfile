# CQA-Face Identify, CPU image: the web app (gunicorn) and the Celery workers run from it.
# torch is installed first and pinned to its CPU build, as in the Makefile: any other torch
# request would pull a multi-GB CUDA build. The GPU variant is docker/Dockerfile.gpu.
FROM python:3.11-slim-bookworm

# CQAFACE_ONNX_CACHE: the ONNX graphs served on the CPU are exported once, on the data volume
# that the web app and the workers share, instead of again in every new container.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    CQAFACE_DATA_DIR=/data \
    CQAFACE_ONNX_CACHE=/data/onnx

RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md ./
COPY embedder embedder
COPY trainer trainer
COPY identify identify
COPY workers workers
COPY migrations migrations
RUN pip install . \
    && pip install --no-deps facenet-pytorch==2.6.0

RUN useradd --create-home --uid 1000 cqaface && mkdir -p /data && chown cqaface /data
USER cqaface
VOLUME ["/data"]
EXPOSE 8000
ENTRYPOINT ["cqaface"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
