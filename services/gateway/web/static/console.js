// The console's charts: each <canvas data-chart> is drawn by Chart.js (served from /static/vendor,
// copied from npm at install time) from the JSON beside it; the same figures are in a table below.
document.querySelectorAll("canvas[data-chart]").forEach((canvas) => {
  if (typeof Chart === "undefined") return;
  const spec = JSON.parse(document.getElementById("data-" + canvas.dataset.chart).textContent);
  const palette = ["#0b5cad", "#1d6b4f", "#b3261e", "#7a4fb3", "#8a5a00", "#4a5560"];
  new Chart(canvas, {
    type: spec.type,
    data: {
      labels: spec.labels,
      datasets: spec.series.map((s, i) => ({
        label: s.label,
        data: s.data,
        backgroundColor: palette[i % palette.length],
        borderColor: palette[i % palette.length],
      })),
    },
    options: {
      animation: false,
      maintainAspectRatio: false,
      scales: { x: { stacked: !!spec.stacked }, y: { stacked: !!spec.stacked, beginAtZero: true, ticks: { precision: 0 } } },
      plugins: { legend: { display: spec.series.length > 1 } },
    },
  });
});
document.querySelectorAll("[data-print]").forEach((button) => button.addEventListener("click", () => window.print()));
