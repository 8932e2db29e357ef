from tests.conftest import seed_items, counters, drain, fresh_run

def test_backfill(app, mtasks):
    seed_items(250)
    run = mtasks.run("CountItemsTask")
    drain(app)
    run = fresh_run(run.id)
    assert run.status == "succeeded", (run.status, run.error_message, run.backtrace)
    assert run.tick_count == 250 and run.tick_total == 250
    assert counters() == [1] * 250
