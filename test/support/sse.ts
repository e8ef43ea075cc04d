import http from "node:http";

export interface SseEvent {
  event: string;
  data: any;
}

/** A Server-Sent Events reader over plain node:http: every event and comment line, as it arrives. */
export class SseStream {
  readonly events: SseEvent[] = [];
  readonly comments: string[] = [];
  status = 0;
  headers: http.IncomingHttpHeaders = {};
  body = "";
  ended = false;
  private buffer = "";
  private readonly req: http.ClientRequest;
  readonly done: Promise<void>;

  constructor(url: string) {
    let resolveDone!: () => void;
    this.done = new Promise((r) => (resolveDone = r));
    this.req = http.get(url, (res) => {
      this.status = res.statusCode ?? 0;
      this.headers = res.headers;
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        this.body += chunk;
        this.buffer += chunk;
        this.parse();
      });
      res.on("end", () => {
        this.ended = true;
        resolveDone();
      });
    });
    this.req.on("error", () => resolveDone());
  }

  private parse(): void {
    let cut: number;
    while ((cut = this.buffer.indexOf("\n\n")) >= 0) {
      const block = this.buffer.slice(0, cut);
      this.buffer = this.buffer.slice(cut + 2);
      let event = "message";
      const data: string[] = [];
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) this.comments.push(line.slice(1).trim());
        else if (line.startsWith("event: ")) event = line.slice(7);
        else if (line.startsWith("data: ")) data.push(line.slice(6));
      }
      if (data.length) this.events.push({ event, data: JSON.parse(data.join("\n")) });
    }
  }

  close(): void {
    this.req.destroy();
  }
}
