// Vite builds the UI into dist/ with every asset under /ui/, where the
// server serves it (the server's build.rs embeds dist/ in the binary).
// `npm run dev` serves it with hot reload and sends /api to a local server.
import { defineConfig } from "vite";

// Node's process, without pulling in @types/node for one line.
declare const process: { env: Record<string, string | undefined> };

export default defineConfig({
  base: "/ui/",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    // One bundle for the page: cytoscape is most of it, and it is served
    // from the binary, so splitting it buys nothing.
    chunkSizeWarningLimit: 1024,
  },
  server: {
    proxy: {
      "/api": process.env.PALISADE_SERVER ?? "http://127.0.0.1:7400",
    },
  },
});
