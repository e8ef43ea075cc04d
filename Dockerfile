# One image for both roles of docker-compose.yml: `node dist/cli.js api` and `node dist/cli.js worker`.
# The API needs Python too: on start it builds the tiny demo models when the default model is one of them.
FROM node:20-bookworm

# Python for the runners; OpenBLAS makes MLX's Linux CPU backend ~16x faster (see scripts/setup.sh).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv libopenblas0-pthread \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# Python dependencies first: the slowest layer, rebuilt only when the requirement files change.
COPY python/requirements.txt python/requirements.lock python/
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir -q --upgrade pip \
 && /opt/venv/bin/pip install --no-cache-dir -q -r python/requirements.txt -c python/requirements.lock
ENV PIXELAI_PYTHON=/opt/venv/bin/python

COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error

COPY . .
RUN npm run build

EXPOSE 5000
CMD ["node", "dist/cli.js", "start"]
