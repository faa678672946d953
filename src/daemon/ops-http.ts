/**
 * The operations endpoint: plain HTTP on http.host:http.port (127.0.0.1 by default; there is no
 * authentication, so it stays on loopback unless a firewall guards it). Two routes, GET or HEAD:
 *   /healthz  200 {"status":"ok",...} when the node can take requests, else 503 with what is missing
 *   /metrics  Prometheus text format; OpenMetrics (with trace-id exemplars) when the Accept header asks for it
 * Anything else is 404; other methods 405. Started before the models load, closed at the end of stop.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { EdgeError } from '../errors.js';
import type { Logger } from '../log.js';
import { wantsOpenMetrics } from './exemplars.js';
import type { DaemonMetrics } from './metrics.js';
import type { Readiness } from './readiness.js';
import { listen, urlHost } from '../net.js';

export class OpsHttpServer {
  private server: Server | undefined;

  constructor(private readonly deps: { readiness: Readiness; metrics: DaemonMetrics; log: Logger }) {}

  /** Listens; resolves with the bound port (the one asked for, or the system's pick for 0 in tests). */
  async listen(port: number, host: string): Promise<number> {
    const server = createServer((req, res) => void this.handle(req, res));
    // Scrapers and probes send small GETs: a client that dawdles is cut off rather than held.
    server.requestTimeout = 10_000;
    server.headersTimeout = 10_000;
    await listen(server, port, host).catch((err: NodeJS.ErrnoException) => {
      throw listenError(err, port, host);
    });
    server.on('error', (err) => this.deps.log.warn(`http endpoint: ${err.message}`));
    this.server = server;
    const bound = (server.address() as AddressInfo).port;
    this.deps.log.info(`http endpoint on ${urlOf(host, bound)} (/healthz, /metrics)`);
    return bound;
  }

  /** Stops listening and ends open (keep-alive) connections. */
  async close(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeAllConnections();
    await closed;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    req.resume(); // no route takes a body
    const path = (req.url ?? '/').split('?')[0];
    try {
      if (path !== '/healthz' && path !== '/metrics') {
        return send(res, 404, 'text/plain; charset=utf-8', `not found: ${path}; this endpoint serves GET /healthz and GET /metrics\n`);
      }
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.setHeader('Allow', 'GET, HEAD');
        return send(res, 405, 'text/plain; charset=utf-8', `${req.method} is not allowed on ${path}: use GET\n`);
      }
      if (path === '/healthz') {
        const report = this.deps.readiness.report();
        return send(res, report.status === 'ok' ? 200 : 503, 'application/json', JSON.stringify(report) + '\n');
      }
      const openMetrics = wantsOpenMetrics(req.headers.accept);
      send(res, 200, this.deps.metrics.contentType(openMetrics), await this.deps.metrics.text(openMetrics));
    } catch (err) {
      // A failing collector must not take the daemon down; the scrape fails and says why.
      this.deps.log.warn(`http ${path}: ${(err as Error).message}`);
      if (!res.headersSent) send(res, 500, 'text/plain; charset=utf-8', `internal error: ${(err as Error).message}\n`);
    }
  }
}

function send(res: ServerResponse, status: number, type: string, body: string): void {
  res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-store' });
  res.end(res.req.method === 'HEAD' ? undefined : body);
}

const urlOf = (host: string, port: number) => `http://${urlHost(host)}:${port}`;

function listenError(err: NodeJS.ErrnoException, port: number, host: string): EdgeError {
  const where = `${host}:${port}`;
  switch (err.code) {
    case 'EADDRINUSE':
      return new EdgeError('E_PORT_IN_USE', `cannot serve /healthz and /metrics on ${where}: the port is in use by another process; set http.port (or --http-port) to a free port, or stop that process`);
    case 'EACCES':
      return new EdgeError('E_CONFIG', `cannot serve /healthz and /metrics on ${where}: not allowed to listen there (ports below 1024 need privileges); set http.port above 1023`);
    case 'EADDRNOTAVAIL':
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return new EdgeError('E_CONFIG', `cannot serve /healthz and /metrics on ${where}: http.host ${host} is not an address of this machine; use 127.0.0.1 (the default) or one of its addresses`);
    default:
      return new EdgeError('E_CONFIG', `cannot serve /healthz and /metrics on ${where}: ${err.message}`);
  }
}
