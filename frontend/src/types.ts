// The plugin's answers, as the Python code builds them (nipgboard_plugin/plugin.py's routes and the
// library functions they serialise). Only what the server really sends; optional where it may be absent.

export type Split = 'train' | 'test' | 'pool';

// -- /runs -----------------------------------------------------------------------------------------
export interface Run {
  name: string;
  dataset: boolean;   // false while a first ingest is still creating it
  images: number;
  labelled: number;
  active_jobs: number;
}

/** JobManager.status(): the background worker. */
export interface WorkerStatus {
  worker: { pid: number; alive: boolean; warm: boolean | null } | null;
  running: { run: string; id: number } | null;
  /** Jobs found running at start-up (their worker gone) and queued again. */
  recovered: { run: string; id: number }[];
}

export interface RunsAnswer {
  version: string;
  logdir: string | null;
  runs: Run[];
  jobs: WorkerStatus;
  /** Only when the logdir holds no run yet. */
  onboarding?: string;
}

// -- /summary (Store.summary) ----------------------------------------------------------------------
export interface Summary {
  run: string;
  logdir: string;
  images_root: string | null;
  images: number;
  labelled: number;
  /** Expert labels per class. */
  classes: Record<string, number>;
  splits: Record<Split, number>;
  unreadable: { path: string; reason: string }[];
  duplicates: { path: string; kept: string; image_id: number }[];
  label_issues: { source: string; detail: string }[];
  test_fraction: number | null;
  seed: number | null;
}

// -- /networks (Backbone.describe) -----------------------------------------------------------------
export interface Network {
  id: string;
  name: string;
  family: string;
  input_size: [number, number];
  feature_dim: number;
  /** Where the weights come from, in words. */
  weights: string;
  paper: boolean;
  available: boolean;
  /** Why it is not available (or a note when it is). */
  message: string | null;
  /** Images of this run with cached features (with `run` only; null when the network cannot say). */
  cached?: number | null;
  /** Images/s measured on the server's machine per device ('cpu', 'cuda'); {} before an embed measured it. */
  speed?: Record<string, number>;
  /** Family-specific facts, e.g. transformers: repo, location of the weights, zero_shot (has a text tower). */
  extra?: { repo?: string; location?: string | null; zero_shot?: boolean };
}
export interface NetworksAnswer { networks: Network[] }

// -- /kinds (Step.describe) ------------------------------------------------------------------------
export type ParamType = 'int' | 'float' | 'bool' | 'choice' | 'str' | 'network' | 'networks'
  | 'int_list' | 'float_list' | 'choice_list' | 'path' | 'object';
export type Scalar = number | string | boolean;
export type ParamValue = Scalar | Scalar[];

export interface KindParam {
  name: string;
  type: ParamType;
  /** null: required, or left to the library function's own default. */
  default: ParamValue | null;
  required: boolean;
  min: number | null;
  max: number | null;
  /** The allowed values (strings for choices; numbers for a number limited to a few sizes). */
  choices: (string | number)[] | null;
  help: string;
}

export interface Kind {
  kind: string;
  description: string;
  available: boolean;
  needs_dataset: boolean;
  /** Kinds that must have run before, for the same network. */
  needs: string[];
  produces: string[];
  params: KindParam[];
}
export interface KindsAnswer { kinds: Kind[] }

// -- /jobs, /job, /start_job, /cancel_job ------------------------------------------------------------
export type JobState = 'queued' | 'running' | 'done' | 'failed' | 'cancelled';
export const ACTIVE: readonly JobState[] = ['queued', 'running'];

/** Values the user changed, per step of the pipeline: {project: {method: 'pca'}, ...}. */
export type StepOptions = Record<string, Record<string, ParamValue>>;

/** A job's validated parameters, as stored. `network` for the kinds of one network; for a
 * `pipeline`, `steps` (default embed, project, cluster, predict) and `options` per step. */
export interface JobParams {
  network?: string;
  steps?: string[];
  options?: StepOptions;
  [name: string]: ParamValue | StepOptions | null | undefined;
}

export interface Job<R = unknown> {
  id: number;
  run: string;
  kind: string;
  params: JobParams;
  state: JobState;
  /** What the job is doing now, in words. */
  stage: string | null;
  done: number;
  total: number | null;
  /** done / total (1 once done); null when the total is unknown. */
  fraction: number | null;
  rate: number | null;
  eta: number | null;
  message: string | null;
  /** The kind's result once done. */
  result: R | null;
  error: string | null;
  cancel_requested: boolean;
  resumed: number;
  worker_pid: number | null;
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
  updated_at: number;
}
export interface JobsAnswer { jobs: Job[]; worker: WorkerStatus }

/** One image named in an answer (Run.entries), with extra columns where the answer has them. */
export interface ImageEntry { id: number; path: string; split: Split }

/** What the embed step reports (alone, or in a pipeline's `steps.embed`): where it ran. */
export interface EmbedResult {
  network: string;
  extracted: number;
  cached_before: number;
  images: number;
  engine: string | null;
  /** The device that ran: 'cpu' | 'cuda' (null when nothing ran or the engine is Keras). */
  device: string | null;
  /** True when a GPU was asked for by `auto` but could not be used; `device_note` says why. */
  device_fallback?: boolean;
  device_note?: string;
}

/** What a running `pipeline` job reports as its `result` while it places a big dataset's images chunk by
 * chunk (its `early_view`): the projection was fitted on the labelled images (and a sample), and every
 * chunk embedded since is placed by transform. /points sends NaN for the images not placed yet. */
export interface PipelinePreview {
  network: string;
  /** Images with coordinates now (grows). */
  placed: number;
  /** All images of the run. */
  images: number;
  /** What it embeds now, in words (e.g. "labelled images", "the fit's sample", "the rest"). */
  phase: string;
}
export interface PreviewResult { preview: PipelinePreview }

/** A `pipeline` job's result: each step's own result, by step name. */
export interface PipelineResult {
  network: string;
  steps: { embed?: EmbedResult; project?: { notes?: string[] } } & Record<string, unknown>;
  /** What the chain changed for the labels there are (e.g. predict skipped with no labels yet). */
  notes?: string[];
}

/** The result of a `duplicates` job, and the /duplicates answer (with `run`). */
export interface DuplicatesResult {
  network: string;
  threshold: number;
  distance: string;
  groups: ImageEntry[][];
  images_in_groups: number;
}

// -- /metadata ---------------------------------------------------------------------------------------
export interface Metadata {
  run: string;
  count: number;
  ids: number[];
  paths: string[];
  split: Split[];
  width: number[];
  height: number[];
  label: (string | null)[];
  // With `network`, from whichever results exist: clusters (cluster, cluster_label), predictions.
  network?: string;
  cluster?: (number | null)[];
  cluster_label?: (string | null)[];
  predicted?: (string | null)[];
  confidence?: (number | null)[];
}

// -- /clusters (graph.cluster_dataset's stored meta) ----------------------------------------------------
export interface ClusterRow {
  cluster: number;
  /** Majority class of its train images; null when it has none (needs_label). */
  label: string | null;
  needs_label: boolean;
  size: number;
  n_labelled: number;
  counts: Record<string, number>;
  purity: number;
  confidence: number;
}
export interface ClustersAnswer {
  network: string;
  params: Record<string, ParamValue | null>;
  classes: string[];
  clusters: ClusterRow[];
  n_clusters: number;
  modularity: number;
  edge_length: number;
  seconds: number;
  created_at: number;
  /** Images per cluster id. */
  sizes: number[];
}

// -- /metrics (evaluate.metrics_report) -----------------------------------------------------------------
export type MetricName = 'accuracy' | 'precision' | 'specificity' | 'recall' | 'f1';
export type MetricsRow = { network: string; method: string; split: 'train' | 'test'; n: number }
  & Record<MetricName, number | null>;
export interface ClassMetrics { precision: number | null; recall: number | null; specificity: number | null; f1: number | null; support: number }
export interface MetricsDetail extends Partial<Record<MetricName, number | null>> {
  n: number;
  labels: string[];
  confusion: number[][];
  per_class: Record<string, ClassMetrics>;
}
export interface MetricsAnswer {
  positive: string | null;
  average: 'binary' | 'macro';
  has_labels: boolean;
  rows: MetricsRow[];
  /** By "network/method/split". */
  details: Record<string, MetricsDetail>;
  /** Per network: silhouette of its clusters in the projection (null with fewer than 2 clusters). */
  silhouette: Record<string, number | null>;
  notes: string[];
}

// -- /review (review.review_queue) ----------------------------------------------------------------------
export interface ReviewItem {
  id: number;
  path: string;
  role: Split;
  label: string | null;
  consensus: string;
  confidence: number;
  doubt: number;
  /** Each network's predicted label. */
  votes: Record<string, string>;
  dissenters: string[];
  clusters: Record<string, number>;
  reasons: string[];
}
export interface ReviewAnswer {
  networks: string[];
  classes: string[];
  unlabelled: number;
  flagged: number;
  disagreements: number;
  predictor_disagreements: number;
  low_confidence: number;
  contradicted_labels: number;
  queue_length: number;
  shown: number;
  items: ReviewItem[];
  notes: string[];
  /** Networks whose predictions predate the latest label changes. */
  stale: string[];
}

// -- /set_labels --------------------------------------------------------------------------------------
export interface SetLabelsAnswer {
  run: string;
  changed: number;
  requested: number;
  /** By image id: the label now. */
  labels: Record<string, string | null>;
  /** By image id (the first 1000): the label before. */
  previous: Record<string, string | null>;
}

// -- /similar, /duplicates --------------------------------------------------------------------------
export interface SimilarAnswer {
  run: string;
  network: string;
  id: number;
  k: number;
  query: ImageEntry;
  /** Nearest first. */
  similar: (ImageEntry & { distance: number })[];
}
export interface DuplicatesAnswer extends DuplicatesResult { run: string }

// -- /sprite_index ----------------------------------------------------------------------------------
export interface SpritePage { page: number; first: number; count: number; columns: number; rows: number; width: number; height: number; ready: boolean }
export interface SpriteIndex { tile: number; images: number; order: string; pages: SpritePage[] }

// -- a `suggest` job's result (suggest.suggest_for_dataset) ---------------------------------------------
/** One image to label or check next. `kind`, `prediction` and `confidence` come with newer servers. */
export interface SuggestItem extends ImageEntry {
  /** Why this image, in one line. */
  reason: string;
  score: number;
  /** 'label': no label yet; 'check': a prediction to confirm; 'recheck': an expert label that may be wrong. */
  kind?: 'label' | 'check' | 'recheck' | string;
  prediction?: string | null;
  confidence?: number | null;
}
export interface SuggestResult {
  network: string;
  /** Networks with features (the first gave them); `predictions`: those whose predictions were weighed. */
  networks: string[];
  predictions: string[];
  mode: string;
  why: string;
  score: string;
  asked: number;
  shown: number;
  labelled: number;
  unlabelled: number;
  seconds: number;
  items: SuggestItem[];
  notes: string[];
}

// -- /accuracy (estimate.answer): the estimated accuracy after each prediction ------------------------
export interface AccuracyPoint {
  /** Expert labels when the prediction ran. */
  labels: number;
  /** Estimated accuracy of the predictions on the unlabelled images, with its interval. */
  accuracy: number;
  low: number;
  high: number;
  /** Estimated share of all images whose final label is right. */
  overall: number;
}
export interface AccuracyAnswer { network: string; points: AccuracyPoint[]; method: string }
